"""Rotation over real HTTP against the Telna-like simulator on the real dev server."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from models.db import session_scope
from models.payloads import BalanceStatus, LineState, Policy
from models.tables import Balance, LineEvent
from tests.e2e.harness import Rig, iccids, none_seconds, rig

# 10 s passes with a 5 s lead and a 3 s margin: a rotation every ~7 s.
FAST = Policy(lead_seconds=5, margin_seconds=3)


# On PostgreSQL only: tests/e2e/test_carriers.py rotates a mixed fleet on SQLite.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
async def test_three_esims_rotate_five_times_with_no_gap(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        fleet = iccids(3)
        await r.add_esims(*fleet)
        for iccid in fleet:
            await r.enrol(iccid, "telna-compressed-10s", policy=FAST)
        for iccid in fleet:
            await r.wait_for(iccid, lambda s: s.rotations >= 5, 90, "five rotations")
        stopped_at = datetime.now(UTC)
        await r.cancel_and_wait(*fleet)
        for iccid in fleet:
            intervals = await r.timeline(iccid)
            assert intervals[0]["state"] == "high_speed"
            assert none_seconds(intervals, until=stopped_at) == 0, intervals
            orders = [e for e in await r.ledger(iccid) if e["action"] == "order"]
            assert len(orders) >= 6
        assert await r.purchases_made_twice(*fleet) == []
        await r.assert_database_matches_carrier(*fleet)


# On one database, as each e2e test here: the store is tested on both (tests/store).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_heavy_traffic_switches_before_the_window_ends(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await r.enrol(iccid, "telna-compressed-60s")
        first = await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        assert first.active is not None and first.active.ends_at is not None
        # 6 MB allowance at 300 kB/s: used up ~20 s into a 60 s window.
        await r.traffic(iccid, 300_000)
        after = await r.wait_for(iccid, lambda s: s.rotations >= 1, 30, "early rotation")
        await r.traffic(iccid, 0)
        switched_at = datetime.now(UTC)
        assert switched_at < first.active.ends_at
        assert after.early_rotations == 1
        assert after.archived[-1].state == LineState.exhausted
        intervals = await r.timeline(iccid)
        assert [i["state"] for i in intervals] == ["high_speed"], intervals
        await r.cancel_and_wait(iccid)
        await r.assert_database_matches_carrier(iccid)


# On one database, as each e2e test here: the store is tested on both (tests/store).
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
async def test_a_telna_pass_used_up_before_the_switch_hands_over_to_the_one_waiting(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    """A burst uses the pass up before the product switches (no switch by usage short of
    the whole allowance here): Telna ends it (CARRIERS.md 2.6) and starts the AUTO package
    bought ahead at once. The workflow learns it, records the line ``exhausted`` at that
    moment and confirms the next one: no gap, no throttled second, nothing failed."""
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        # Bought ahead 10 s into the 60 s pass; switched by usage only once used up.
        late = Policy(lead_seconds=50, margin_seconds=0.01, switch_fraction=1.0)
        await r.enrol(iccid, "telna-compressed-60s", policy=late)
        ahead = await r.wait_for(iccid, lambda s: s.scheduled is not None, 30, "bought ahead")
        assert ahead.active is not None and ahead.scheduled is not None
        first = ahead.active.line_id
        await r.traffic(iccid, 3_000_000)  # 6 MB: used up in 2 s
        for _ in range(100):
            ledger = await r.ledger(iccid)
            if any(e["action"] == "expire" and e["package_id"] == first for e in ledger):
                break
            await asyncio.sleep(0.1)
        await r.traffic(iccid, 0)
        ends = [(e["action"], e["at"]) for e in ledger if e["package_id"] == first][-2:]
        assert [action for action, _ in ends] == ["exhaust", "expire"], ledger
        after = await r.wait_for(iccid, lambda s: s.rotations >= 1, 30, "handed over")
        assert after.active is not None and after.active.seq == 2
        assert after.active.line_id == ahead.scheduled.line_id
        line = after.archived[-1]
        assert (line.seq, line.state) == (1, LineState.exhausted)
        assert line.ended_at == line.exhausted_at
        assert after.status == BalanceStatus.Active and after.failing_reason is None
        started = next(e for e in ledger if e["action"] == "activate" and e["package_id"] != first)
        assert started["at"] == ends[-1][1]  # on attach, the moment the first one ended
        assert [i["state"] for i in await r.timeline(iccid)] == ["high_speed"]
        await r.cancel_and_wait(iccid)
        assert await r.purchases_made_twice(iccid) == []
        await r.assert_database_matches_carrier(iccid)


# On one database, as each e2e test here: the store is tested on both (tests/store).
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_at_the_cost_cap_a_telna_esim_used_up_has_no_service_and_says_so(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    """Telna ends a package whose data is used up (CARRIERS.md 2.6): at the cap there is
    no throttled speed to fall back to, and nothing is bought ahead by usage (a package
    waiting on the SIM would start at once, past the cap)."""
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        iccid = await held_at_the_cap(r, "telna-compressed-60s", "none")
        status = await r.status(iccid)
        assert status.service == "none" and status.scheduled is None
        ledger = await r.ledger(iccid)
        assert [e["action"] for e in ledger] == ["order", "activate", "exhaust", "expire"]
        await finish(r, iccid)


async def test_at_the_cost_cap_a_webbing_esim_stays_throttled_and_says_so(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Webbing's usage reaches the workflow through the usage poller alone; its used-up
    product stays on the device at the throttled speed."""
    async with rig(dev_env, tmp_path, carrier="webbing") as r:
        iccid = await held_at_the_cap(r, "compressed-60s", "throttled", poll=True)
        assert (await r.status(iccid)).service == "throttled"
        await finish(r, iccid)


async def held_at_the_cap(r: Rig, product: str, used_up: str, poll: bool = False) -> str:
    """One line a day: traffic uses the allowance up, and the eSIM stays on it (timeline
    ``used_up``: throttled, or none where the pass ends), with the state, the database and
    the ledger saying so."""
    (iccid,) = iccids(1)
    await r.add_esims(iccid)
    await r.enrol(iccid, product, policy=Policy(max_lines_per_day=1))
    await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
    await r.traffic(iccid, 1_000_000)
    capped = await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Throttled, 30, "Throttled")
    assert capped.capped and capped.rotations == 0
    for _ in range(60):  # the allowance (6 MB) is gone ~6 s after traffic started
        intervals = await r.timeline(iccid)
        if intervals[-1]["state"] == used_up:
            break
        await asyncio.sleep(0.25)
    assert intervals[-1]["state"] == used_up, intervals
    # With ``poll``, the workflow learns the allowance is used up from a poll that reads it
    # so: a poll runs as its own workflow, behind the carrier's usage lag, so it may take a
    # few. The poller goes on reading: nothing it says moves the cap.
    for _ in range(15 if poll else 0):
        await r.poll_usage()
        await asyncio.sleep(2)
        if (await r.status(iccid)).service == used_up:
            break
    await asyncio.sleep(3 if poll else 1)
    still = await r.status(iccid)
    assert still.rotations == 0 and still.status == BalanceStatus.Throttled
    for _ in range(120):  # the workflow's store write follows its state (an activity)
        with session_scope(r.settings.database_url) as session:
            balance = session.exec(select(Balance).where(Balance.iccid == iccid)).one()
        if balance.state == "Throttled":
            break
        await asyncio.sleep(0.25)
    assert balance.state == "Throttled" and balance.capped
    with session_scope(r.settings.database_url) as session:
        events = session.exec(select(LineEvent).where(LineEvent.kind == "cap_reached")).all()
        assert [e.detail["when_used_up"] for e in events] == [
            "no service" if used_up == "none" else "throttled"
        ]
    return iccid


async def finish(r: Rig, iccid: str) -> None:
    await r.traffic(iccid, 0)
    await r.cancel_and_wait(iccid)
    assert await r.purchases_made_twice(iccid) == []
    await r.assert_database_matches_carrier(iccid)
