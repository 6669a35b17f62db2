"""Long timers on the time-skipping server, with stateful fake activities."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from models.payloads import (
    ActionRequest,
    BalanceState,
    BalanceStatus,
    LineState,
    Policy,
    ProductSpec,
    UsageReport,
)
from tests.fakes import FakeCarrier, running_balance
from tests.workflows.record_histories import chain
from workflows.balance import BalanceWorkflow

DAILY = ProductSpec(
    id="telna-daily-1gb",
    carrier="telna",
    carrier_product_id="daily-1gb",
    allowance_bytes=1_000_000_000,
    validity_seconds=86_400,
)


def _state(product: ProductSpec = DAILY, **fields: Any) -> BalanceState:
    return BalanceState(
        balance_id=f"bal_{uuid.uuid4().hex[:12]}",
        iccid="8944000000000000019",
        carrier="telna",
        product=product,
        **fields,
    )


async def test_thirty_days_rotate_thirty_times_in_small_runs(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    fake = FakeCarrier()
    state = _state()
    async with running_balance(env, fake, state) as handle:
        await env.sleep(timedelta(days=30))
        status = await handle.query(BalanceWorkflow.status)
        assert status.rotations == 30
        assert status.active is not None and status.active.seq == 31
        assert fake.orders == [f"{state.balance_id}:{seq}" for seq in range(1, 32)]
        # Every line before the active one ended by time, after its successor started.
        ended = [
            line
            for record in fake.records
            for line in record.lines
            if line.state == LineState.expired
        ]
        assert sorted({line.seq for line in ended}) == list(range(1, 31))
        assert len(fake.run_ids) >= 30
        for run_id in fake.run_ids:
            history = await env.client.get_workflow_handle(handle.id, run_id=run_id).fetch_history()
            assert len(history.events) < 200, f"run {run_id}: {len(history.events)} events"
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
        result = await handle.result()
        assert result.status == BalanceStatus.Cancelled


async def test_term_of_three_lines_ends_after_the_third_in_small_runs(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    fake = FakeCarrier()
    state = _state(lines_total=3)
    async with running_balance(env, fake, state) as handle:
        result = await handle.result()
        assert result.status == BalanceStatus.Completed
        assert fake.orders == [f"{state.balance_id}:{seq}" for seq in (1, 2, 3)]
        assert result.rotations == 2
        assert [line.seq for line in result.archived] == [1, 2, 3]
        assert all(line.state == LineState.expired for line in result.archived)
        last = result.archived[-1]
        assert last.ended_at == last.ends_at  # the last line ran to the end of its window
        desc = await handle.describe()
        assert desc.status == WorkflowExecutionStatus.COMPLETED
    # The bring-up is the longest history a run has (order, activation polls): the run
    # hands over as soon as the line is active, so the next wake (the order) replays a
    # run of one timer. A run that has rotated hands over when its next order falls
    # due, so a switch is the middle of a short run: order, switch, the next order's
    # timer.
    runs = await chain(env.client, handle.id)
    # Bring-up run, the run of line 2 (handed over at line 3's order), the last run.
    assert len(runs) == 3

    def scheduled(events: list[Any]) -> list[str]:
        wanted = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        return [
            e.activity_task_scheduled_event_attributes.activity_type.name
            for e in events
            if e.event_type == wanted
        ]

    first, second, last = (run.events for run in runs)
    assert scheduled(first) == ["order_line", "activate_line"]
    assert first[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    # The next run's first command is its sleep until the order.
    assert second[4].event_type == EventType.EVENT_TYPE_TIMER_STARTED
    assert scheduled(second) == ["order_line", "activate_line", "deactivate_line"]
    # It switched, slept until line 3's order fell due and handed over without placing it.
    assert second[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW
    assert second[-5].event_type == EventType.EVENT_TYPE_TIMER_FIRED
    # The last run's first command is that order; it switches, then ends line 3 with the
    # term.
    assert last[4].event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ended = ["order_line", "activate_line", "deactivate_line", "deactivate_line"]
    assert scheduled(last) == ended
    assert last[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED


async def test_the_cost_cap_is_written_as_it_is_reached_not_at_the_next_wake(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """One report of a spent line at the cap, then nothing more (a poller's reads of a
    spent line are no news): the balance's Throttled state and its ``cap_reached`` event
    reach the database at once, not when the line's switch hours later wakes it."""
    env = time_skipping_env
    fake = FakeCarrier()
    # In place (Webbing), as in the e2e test that showed it: at the cap nothing is bought
    # ahead either, so the balance goes straight to sleep.
    in_place = DAILY.model_copy(update={"rotation": "in_place"})
    state = _state(in_place, policy=Policy(max_lines_per_day=1))
    async with running_balance(env, fake, state) as handle:
        await env.sleep(timedelta(seconds=5))
        status = await handle.query(BalanceWorkflow.status)
        assert status.active is not None
        # Used up at once: with nothing left to project, no usage check wakes it either.
        used = DAILY.allowance_bytes
        report = UsageReport(seq=1, used_bytes=used, observed_at=await env.get_current_time())
        await handle.signal(BalanceWorkflow.usage_reported, report)
        await env.sleep(timedelta(seconds=5))
        assert (await handle.query(BalanceWorkflow.status)).status == BalanceStatus.Throttled
        written = [
            (record.balance.status if record.balance else None, [e.kind for e in record.events])
            for record in fake.records
        ]
        assert any("cap_reached" in kinds for _, kinds in written), written
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
        assert (await handle.result()).status == BalanceStatus.Cancelled
