"""Continuity figures of the API against the carriers' own timelines, for one mixed run.

The API computes gap, throttled seconds and rotations from the line times the carriers
reported (activation, end, exhaustion); the simulators keep their own per-ICCID timeline
(``high_speed`` / ``throttled`` / ``none``) and ledger. Both must tell the same story.

Tolerance: the carriers report times in whole milliseconds (Telna epoch ms, Webbing
``.fff``) while the simulators' timelines keep microseconds, so each interval boundary
may differ by up to 1 ms; nothing else is allowed to differ, but for one thing: a used-up
pass is seen when it is seen. Webbing announces nothing, so a throttled stretch starts,
for the API, at the first usage read that sees the allowance gone; Telna ends a used-up
package and sends its termination, but a usage read may see the allowance gone first, and
the line's end is then that read's until the event corrects it. Either may be short by up
to ``READ_LAG`` seconds, never long.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from models.db import session_scope
from models.payloads import BalanceStatus, Policy
from models.tables import BalanceLine, LineEvent
from tests.e2e.harness import OPERATOR_KEY, Rig, iccids, rig

AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}
READ_LAG = 2.0  # how late the first read at the allowance may come (seen: under 0.5 s)
# 10 s passes with a 5 s lead and a 3 s margin: a rotation every ~7 s.
FAST = Policy(lead_seconds=5, margin_seconds=3)


def _seconds(intervals: list[dict[str, Any]], state: str) -> float:
    """Seconds in ``state`` over the timeline's closed intervals (the open last one is
    what follows the balance's end)."""
    return sum(
        (datetime.fromisoformat(i["end"]) - datetime.fromisoformat(i["start"])).total_seconds()
        for i in intervals
        if i["state"] == state and i["end"] is not None
    )


async def _carrier_truth(r: Rig, iccid: str) -> dict[str, float]:
    """Gap, throttled seconds and rotations from the carrier alone, with the tolerance."""
    intervals = await r.timeline(iccid)
    assert intervals[-1]["state"] == "none" and intervals[-1]["end"] is None, intervals
    activations = [e for e in await r.ledger(iccid) if e["action"] == "activate"]
    return {
        "gap_seconds": _seconds(intervals, "none"),
        "throttled_seconds": _seconds(intervals, "throttled"),
        "rotations": len(activations) - 1,
        "tolerance": 0.001 * 2 * len(intervals),
    }


async def _used_up_now(r: Rig, iccid: str, timeout: float) -> None:
    """Until the active pass is used up: Telna ends it (CARRIERS.md 2.6), so the
    timeline shows no service after its high-speed stretch."""
    for _ in range(int(timeout / 0.25)):
        if [i["state"] for i in await r.timeline(iccid)][-2:] == ["high_speed", "none"]:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"{iccid} never used up: {await r.timeline(iccid)}")


async def _telna_usage(r: Rig, heavy: str, capped: str) -> None:
    """An early rotation by usage, and a stretch without service at the cost cap."""
    for iccid in (heavy, capped):
        await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
    await r.traffic(heavy, 300_000)
    await r.traffic(capped, 1_000_000)
    await _used_up_now(r, capped, 20)
    await r.traffic(capped, 0)  # the next line then serves at high speed to the end
    await r.wait_for(heavy, lambda s: s.early_rotations >= 1, 40, "early rotation")
    await r.traffic(heavy, 0)
    after = await r.wait_for(capped, lambda s: s.rotations >= 1, 40, "capped rotation")
    assert after.status == BalanceStatus.Active


async def _webbing_outage(r: Rig, steady: str) -> None:
    """Webbing is out from before the switch until 3 s past the line's end: no product
    change can be made, so the pass runs out and the device stays on it, throttled, until
    the change made after the outage (one product per device: no gap, but throttled)."""
    rotated = await r.wait_for(steady, lambda s: s.rotations >= 1, 30, "first rotation")
    assert rotated.active is not None and rotated.active.ends_at is not None
    wait = (rotated.active.ends_at - datetime.now(UTC)).total_seconds() - 7
    await asyncio.sleep(max(0.0, wait))
    outage = {"outage_seconds": 10}
    (await r.http.post(f"{r.sims['webbing']}/_sim/faults", json=outage)).raise_for_status()
    await r.wait_for(steady, lambda s: s.rotations >= 3, 40, "rotations after the outage")


def _assert_threshold_events(r: Rig, balance_id: str) -> None:
    """Line 1 of the capped balance: one ``usage_threshold`` event per threshold crossed
    (50 and 80 % from Telna's alerts, 100 % from its termination or a usage read); the
    line's ``exhausted_at`` is no later than the 100 % one's observation."""
    with session_scope(r.settings.database_url) as session:
        events = session.exec(
            select(LineEvent).where(
                LineEvent.balance_id == balance_id,
                LineEvent.kind == "usage_threshold",
                LineEvent.seq == 1,
            )
        ).all()
        line = session.exec(
            select(BalanceLine).where(BalanceLine.balance_id == balance_id, BalanceLine.seq == 1)
        ).one()
    percents = [e.detail["percent"] for e in events]
    assert len(percents) == len(set(percents)) and {50, 80, 100} <= set(percents), percents
    full = next(e.detail for e in events if e.detail["percent"] == 100)
    assert full["used_bytes"] >= full["allowance_bytes"] == line.allowance_bytes
    assert line.exhausted_at is not None
    assert line.exhausted_at <= datetime.fromisoformat(full["observed_at"])


@pytest.mark.timeout(150)
# On PostgreSQL only: the other e2e tests are on SQLite, tests/api/test_continuity.py
# reads the report there.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
async def test_api_continuity_equals_the_carriers_timelines(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url, carrier="mixed") as r:
        heavy, steady, capped = iccids(3)
        await r.add_esims(heavy, steady, capped)  # telna, webbing, telna
        # Heavy: 6 MB at 300 kB/s, used up ~20 s into its 60 s window: an early rotation.
        await r.enrol(heavy, "compressed-60s")
        await r.enrol(steady, "compressed-10s", policy=FAST)
        # Capped: 3 MB at 1 MB/s, used up after 3 s, when Telna ends it; one line a day, so
        # nothing is bought ahead and it has no service until the next line is bought by
        # time, a lead (7.5 s) before its 30 s window would have ended.
        await r.enrol(capped, "compressed-30s", policy=Policy(max_lines_per_day=1))
        await asyncio.gather(_telna_usage(r, heavy, capped), _webbing_outage(r, steady))
        views = {iccid: await r.status(iccid) for iccid in (heavy, steady, capped)}
        await r.cancel_and_wait(heavy, steady, capped)

        figures: dict[str, dict[str, Any]] = {}
        for iccid, view in views.items():
            response = await r.http.get(f"{r.api_url}/v1/balances/{view.balance_id}", headers=AUTH)
            assert response.status_code == 200, response.text
            figures[iccid] = response.json()["continuity"]
            truth = await _carrier_truth(r, iccid)
            got = figures[iccid]
            tolerance = truth["tolerance"]
            for name in ("gap_seconds", "throttled_seconds"):
                late = truth[name] - got[name]
                assert -tolerance <= late <= READ_LAG + tolerance, (iccid, name, got, truth)
            assert got["rotations"] == truth["rotations"], (iccid, got, truth)
        assert figures[heavy]["early_rotations"] >= 1
        assert figures[heavy]["early_rotations"] == views[heavy].early_rotations
        # From 3 s in to the order at 22.5 s, when the next package starts on attach.
        assert figures[capped]["gap_seconds"] > 15 and figures[capped]["throttled_seconds"] == 0
        assert figures[heavy]["throttled_seconds"] == 0
        assert figures[steady]["rotations"] >= 3 and figures[steady]["early_rotations"] == 0
        # The outage's overrun, and recovery: throttled on the spent pass, never a gap.
        assert figures[steady]["gap_seconds"] == 0 and figures[steady]["throttled_seconds"] > 1

        _assert_threshold_events(r, views[capped].balance_id)

        fleet = (await r.http.get(f"{r.api_url}/v1/continuity", headers=AUTH)).json()
        for carrier, members in (("telna", (heavy, capped)), ("webbing", (steady,))):
            part = fleet["carriers"][carrier]
            assert part["balances"] == len(members)
            assert part["rotations"] == sum(figures[i]["rotations"] for i in members)
            for name in ("gap_seconds", "throttled_seconds"):
                assert part[name] == pytest.approx(sum(figures[i][name] for i in members))
        assert fleet["total"]["rotations"] == sum(f["rotations"] for f in figures.values())
