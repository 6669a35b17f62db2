"""The Foundation rotation on a mixed fleet (Telna and Webbing eSIMs side by side; the
rotation rules themselves are tested in tests/workflows/test_rotation.py), and passes whose
windows end at a reset boundary, on both carriers."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from models.payloads import Policy
from tests.e2e.harness import iccids, none_seconds, rig

FAST = Policy(lead_seconds=5, margin_seconds=3)


async def test_a_mixed_fleet_rotates_five_times_with_no_gap(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Telna from an AUTO template (queued: Telna starts each next package as the last
    one expires) and from a MANUAL one (activated: we start it, then end the old one),
    and Webbing."""
    async with rig(dev_env, tmp_path, carrier="mixed") as r:
        fleet = iccids(4)
        await r.add_esims(*fleet)
        queued, manual = fleet[0], fleet[2]
        for iccid in fleet:
            product = "compressed-10s-manual" if iccid == manual else "compressed-10s"
            await r.enrol(iccid, product, policy=FAST)
        for iccid in fleet:
            await r.wait_for(iccid, lambda s: s.rotations >= 5, 90, "five rotations")
        stopped_at = datetime.now(UTC)
        await r.cancel_and_wait(*fleet)
        for iccid in fleet:
            intervals = await r.timeline(iccid)
            assert intervals[0]["state"] == "high_speed"
            assert none_seconds(intervals, until=stopped_at) == 0, (iccid, intervals)
            orders = [e for e in await r.ledger(iccid) if e["action"] == "order"]
            assert len(orders) >= 6
        assert {r.carrier_of[i] for i in fleet} == {"telna", "webbing"}
        assert r.carrier_of[queued] == r.carrier_of[manual] == "telna"
        actions = {i: Counter(e["action"] for e in await r.ledger(i)) for i in (queued, manual)}
        # Queued: each line expired at its end and the next started by itself; only the
        # last was ended by us (the cancel). Activated: we ended each old line.
        assert actions[queued]["expire"] >= 5 and actions[queued]["deactivate"] <= 1
        assert actions[manual]["deactivate"] >= 5
        assert await r.purchases_made_twice(*fleet) == []
        await r.assert_database_matches_carrier(*fleet)


@pytest.mark.parametrize("carrier", ["telna", "webbing"])
async def test_boundary_passes_hand_over_at_the_reset_with_no_gap(
    dev_env: WorkflowEnvironment, tmp_path: Path, carrier: str
) -> None:
    async with rig(dev_env, tmp_path, carrier=carrier) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        # A compressed "UTC day" is 10 s: every line ends at a multiple of 10 s since the epoch.
        # Enrol just after a boundary: a first line bought in a day's last second ends
        # before any order for its successor can reach the carrier.
        await asyncio.sleep(10 - time.time() % 10 + 0.2)
        await r.enrol(iccid, "compressed-10s-utc", policy=FAST)
        done = await r.wait_for(iccid, lambda s: s.rotations >= 3, 60, "three rotations")
        stopped_at = datetime.now(UTC)
        await r.cancel_and_wait(iccid)
        ended = [line for line in done.archived if line.ends_at is not None]
        assert len(ended) >= 3
        for line in ended:
            assert line.ends_at is not None and line.ends_at.timestamp() % 10 == pytest.approx(
                0, abs=0.01
            )
        intervals = await r.timeline(iccid)
        assert none_seconds(intervals, until=stopped_at) == 0, intervals
        await r.assert_database_matches_carrier(iccid)
