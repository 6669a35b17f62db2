"""The Foundation rotation on a mixed fleet (Telna, Webbing and eSIM Go eSIMs side by side;
the rotation rules themselves are tested in tests/workflows/test_rotation.py), an eSIM Go
pass used up before its end, and passes whose windows end at a reset boundary."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from models.payloads import BalanceStatus, LineState, Policy
from tests.e2e.harness import ALL_CARRIERS, iccids, none_seconds, rig

FAST = Policy(lead_seconds=5, margin_seconds=3)


async def test_a_mixed_fleet_rotates_five_times_with_no_gap(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Telna from an AUTO template (queued: Telna starts each next package as the last
    one expires) and from a MANUAL one (activated: we start it, then end the old one),
    Webbing, and eSIM Go (queued: each bundle bought ahead starts by itself as the one
    before expires)."""
    async with rig(dev_env, tmp_path, carrier="mixed", mixed=ALL_CARRIERS) as r:
        fleet = iccids(6)
        await r.add_esims(*fleet)
        queued, manual = fleet[0], fleet[3]
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
        assert [r.carrier_of[i] for i in fleet] == [*ALL_CARRIERS, *ALL_CARRIERS]
        assert r.carrier_of[queued] == r.carrier_of[manual] == "telna"
        esimgo = [i for i in fleet if r.carrier_of[i] == "esimgo"]
        actions = {i: Counter(e["action"] for e in await r.ledger(i)) for i in fleet}
        # Queued: each line expired at its end and the next started by itself; only the
        # last was ended by us (the cancel). Activated: we ended each old line.
        assert actions[queued]["expire"] >= 5 and actions[queued]["deactivate"] <= 1
        assert actions[manual]["deactivate"] >= 5
        for iccid in esimgo:
            # eSIM Go: every bundle started by itself (no start call exists), each old one
            # expired; revokes only at the cancel (the active and the one queued).
            done = actions[iccid]
            assert done["activate"] >= 6 and done["expire"] >= 5, done
            assert done["deactivate"] <= 1 and done["cancel"] <= 1, done
        assert await r.purchases_made_twice(*fleet) == []
        await r.assert_database_matches_carrier(*fleet)


async def test_an_esimgo_bundle_used_up_before_its_end_hands_over_to_the_one_queued(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """A heavy user uses the bundle up long before its end: eSIM Go starts the bundle
    bought ahead at once (CARRIERS.md 4.3) and calls back at 100 %. The workflow records
    the line ``exhausted`` at that moment and confirms the next: no gap, nothing failed."""
    async with rig(dev_env, tmp_path, carrier="esimgo") as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        # Bought ahead 10 s into the 60 s bundle (6 MB).
        await r.enrol(iccid, "compressed-60s", policy=Policy(lead_seconds=50, margin_seconds=3))
        ahead = await r.wait_for(
            iccid, lambda s: s.active is not None and s.scheduled is not None, 30, "bought ahead"
        )
        assert ahead.active is not None and ahead.scheduled is not None
        assert ahead.active.line_id is not None
        first = ahead.active.line_id.rsplit(":", 1)[1]  # eSIM Go's assignment id
        await r.traffic(iccid, 3_000_000)  # used up in 2 s
        for _ in range(100):
            ledger = await r.ledger(iccid)
            if any(e["action"] == "exhaust" and e["package_id"] == first for e in ledger):
                break
            await asyncio.sleep(0.1)
        await r.traffic(iccid, 0)
        exhausted = next(e for e in ledger if e["action"] == "exhaust" and e["package_id"] == first)
        after = await r.wait_for(iccid, lambda s: s.rotations >= 1, 30, "handed over")
        assert after.active is not None and after.active.seq == 2
        assert after.active.line_id == ahead.scheduled.line_id
        line = after.archived[-1]
        assert (line.seq, line.state) == (1, LineState.exhausted)
        assert line.ended_at == line.exhausted_at
        assert line.exhausted_at is not None
        at = datetime.fromisoformat(exhausted["at"])
        assert abs((line.exhausted_at - at).total_seconds()) <= 1.0, (line, exhausted)
        assert after.status == BalanceStatus.Active and after.failing_reason is None
        started = next(e for e in ledger if e["action"] == "activate" and e["package_id"] != first)
        assert started["at"] == exhausted["at"]  # the moment the first was used up
        assert all(i["state"] == "high_speed" for i in await r.timeline(iccid))
        assert after.early_rotations == 1
        await r.cancel_and_wait(iccid)
        assert await r.purchases_made_twice(iccid) == []
        await r.assert_database_matches_carrier(iccid)


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
