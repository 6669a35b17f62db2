"""Early rotation on a polling-only carrier: the usage poller's Schedule alone tells the
balances of a Webbing-like fleet that their allowance is running out."""

from __future__ import annotations

import asyncio
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlmodel import select
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from config import Settings
from models.db import session_scope
from models.payloads import UsagePollInput
from models.tables import Balance, LineEvent
from services.metrics import REGISTRY
from tests.e2e.harness import iccids, none_seconds, rig
from workflows.usage_poll import UsagePollWorkflow, ensure_usage_poll_schedules

log = logging.getLogger(__name__)
# Thresholds a line can cross: pre-order, switch, 100 %. At most one signal each.
THRESHOLDS = 3


def usage_signals() -> float:
    value = REGISTRY.get_sample_value("esim_usage_poll_signals_total", {"carrier": "webbing"})
    return value or 0.0


async def test_a_webbing_fleet_rotates_early_on_usage_through_the_poller_alone_with_gap_0(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path, carrier="webbing") as r:
        fleet = iccids(3)
        await r.add_esims(*fleet)
        for iccid in fleet:
            await r.enrol(iccid, "compressed-60s")
        firsts = [
            await r.wait_for(i, lambda s: s.active is not None, 30, "first line") for i in fleet
        ]
        signals_before, polls_before = usage_signals(), await r.usage_polls()
        # 6 MB at 300 kB/s: used up ~20 s into a 60 s window; time alone rotates at ~54 s.
        for iccid in fleet:
            await r.traffic(iccid, 300_000)
        for iccid, first in zip(fleet, firsts, strict=True):
            assert first.active is not None and first.active.ends_at is not None
            after = await r.wait_for(iccid, lambda s: s.rotations >= 1, 40, "early rotation")
            assert after.early_rotations >= 1
            assert datetime.now(UTC) < first.active.ends_at
        for iccid in fleet:
            await r.traffic(iccid, 0)
        stopped_at = datetime.now(UTC)
        signals = usage_signals() - signals_before
        polls = await r.usage_polls() - polls_before
        await r.cancel_and_wait(*fleet)

        with session_scope(r.settings.database_url) as session:
            events = session.exec(select(LineEvent).where(LineEvent.kind == "activated")).all()
            balances = {b.id: b.iccid for b in session.exec(select(Balance)).all()}
        by_usage = {balances[e.balance_id] for e in events if e.detail.get("reason") == "usage"}
        assert by_usage == set(fleet)
        lines_served = 0
        for iccid in fleet:
            intervals = await r.timeline(iccid)
            assert none_seconds(intervals, until=stopped_at) == 0, (iccid, intervals)
            orders = [e for e in await r.ledger(iccid) if e["action"] == "order"]
            lines_served += len(orders)
        assert await r.purchases_made_twice(*fleet) == []
        log.info(
            "%d polls, %d signals for %d lines of %d balances",
            polls,
            signals,
            lines_served,
            len(fleet),
        )
        # Signals only on crossings: each line at most once per threshold, and far fewer
        # than one per balance per poll.
        assert len(fleet) <= signals <= THRESHOLDS * lines_served, (signals, lines_served)
        assert signals * 3 <= polls * len(fleet), (signals, polls)
        await r.assert_database_matches_carrier(*fleet)


async def test_usage_poll_schedules_are_created_once_and_updated_in_place(
    dev_env: WorkflowEnvironment,
) -> None:
    prefix = f"usage-poll-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        task_queue="poll-queue-a",
        usage_poll_carriers=" webbing, ,webbing",
        usage_poll_interval_seconds=60,
    )
    client = dev_env.client
    assert await ensure_usage_poll_schedules(client, settings, prefix) == [f"{prefix}-webbing"]
    moved = settings.model_copy(
        update={"task_queue": "poll-queue-b", "usage_poll_interval_seconds": 15}
    )
    ids = await asyncio.gather(
        *(ensure_usage_poll_schedules(client, moved, prefix) for _ in range(3))
    )
    assert ids == [[f"{prefix}-webbing"]] * 3
    handle = client.get_schedule_handle(f"{prefix}-webbing")
    try:
        schedule = (await handle.describe()).schedule
        assert [i.every for i in schedule.spec.intervals] == [timedelta(seconds=15)]
        assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert (action.workflow, action.task_queue) == ("UsagePollWorkflow", "poll-queue-b")
    finally:
        await handle.delete()


async def test_a_poll_during_an_outage_gives_up_and_completes(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """The schedule polls again an interval later: a run that cannot reach the carrier
    completes with the reason instead of failing (no failed runs in the Web UI)."""
    async with rig(dev_env, tmp_path, carrier="webbing") as r:
        await r.faults(outage_seconds=60)
        try:
            result = await r.client.execute_workflow(
                UsagePollWorkflow.run,
                UsagePollInput(carrier="webbing"),
                id=f"usage-poll-outage-{uuid.uuid4().hex[:8]}",
                task_queue=r.settings.task_queue,
            )
        finally:
            await r.faults()
    assert result.gave_up is not None and "503" in result.gave_up
    assert (result.pages, result.signals) == (0, 0)
