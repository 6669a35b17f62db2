"""Long timers on the time-skipping server, with stateful fake activities."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from models.payloads import ActionRequest, BalanceState, BalanceStatus, LineState, ProductSpec
from tests.fakes import FakeCarrier
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
    queue = str(uuid.uuid4())
    async with Worker(
        env.client, task_queue=queue, workflows=[BalanceWorkflow], activities=fake.activities()
    ):
        state = _state()
        handle = await env.client.start_workflow(
            BalanceWorkflow.run, state, id=f"balance-{uuid.uuid4()}", task_queue=queue
        )
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


async def test_term_of_three_lines_ends_after_the_third(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    fake = FakeCarrier()
    queue = str(uuid.uuid4())
    async with Worker(
        env.client, task_queue=queue, workflows=[BalanceWorkflow], activities=fake.activities()
    ):
        state = _state(lines_total=3)
        handle = await env.client.start_workflow(
            BalanceWorkflow.run, state, id=f"balance-{uuid.uuid4()}", task_queue=queue
        )
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


async def test_a_run_begun_before_runs_began_at_the_order_hands_over_at_its_switch_once(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """A balance whose runs ended at their switch (started before RUNS_BEGIN_AT_ORDER)
    ends its run in flight there, as it always did; its next run hands over at the next
    order, and every run after that begins with its order."""
    env = time_skipping_env
    fake = FakeCarrier()
    queue = str(uuid.uuid4())
    async with Worker(
        env.client, task_queue=queue, workflows=[BalanceWorkflow], activities=fake.activities()
    ):
        state = _state(runs_begin_at_order=False)
        handle = await env.client.start_workflow(
            BalanceWorkflow.run, state, id=f"balance-{uuid.uuid4()}", task_queue=queue
        )
        await env.sleep(timedelta(days=3, hours=12))
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
        result = await handle.result()
    assert result.rotations == 3
    assert fake.orders == [f"{state.balance_id}:{seq}" for seq in (1, 2, 3, 4)]
    histories = await chain(env.client, handle.id)
    runs = [[(e.event_type, e) for e in history.events] for history in histories]
    assert len(runs) == 3

    def first_activity(run: list[tuple[int, Any]]) -> str:
        wanted = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        scheduled = next(e for kind, e in run if kind == wanted)
        return str(scheduled.activity_task_scheduled_event_attributes.activity_type.name)

    handed_over = [run[-2][0] for run in runs[:-1]]
    # Run 1 (the earlier way): brought up line 1, ordered line 2, ended at the switch, in
    # the workflow task of the switch's record.
    assert handed_over[0] == EventType.EVENT_TYPE_MARKER_RECORDED
    # Run 2 ended in a workflow task woken by the sleep until the order of line 4; run 3
    # began with that order.
    assert handed_over[1] == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
    assert runs[1][-5][0] == EventType.EVENT_TYPE_TIMER_FIRED
    assert [first_activity(run) for run in runs] == ["order_line"] * 3
    assert runs[1][4][0] == EventType.EVENT_TYPE_TIMER_STARTED  # run 2 slept first
    assert runs[2][4][0] == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED  # run 3 ordered first
