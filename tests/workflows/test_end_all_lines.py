"""Ending a balance's lines records what the carrier did with them.

The order of the next line carries a queued start at the current line's end (the
carrier's safety net). When the order's answer is lost and a retry reads the package
after that start, the workflow holds its scheduled line as ``active``. A cancel then
must still record that the carrier activated it: the ledger and the carrier agree.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from activities.carrier import ACTIVATION_PENDING
from models.payloads import (
    ActionRequest,
    BalanceStatus,
    Line,
    LineCommand,
    LineState,
    OrderLineInput,
)
from tests.fakes import FakeCarrier, running_balance
from tests.workflows.test_balance_long_term import _state
from workflows.balance import BalanceWorkflow


class StartedBeforeTheAnswer(FakeCarrier):
    """Line 2's order is read back after the carrier's safety net has started it."""

    @activity.defn(name="order_line")
    async def order_line(self, req: OrderLineInput) -> Line:
        line = await super().order_line(req)
        if req.seq == 2 and line.state == LineState.scheduled:
            line.state = LineState.active
            line.activated_at = self._now()
            line.ends_at = line.activated_at + timedelta(seconds=line.validity_seconds)
        return line


async def test_cancel_records_the_carriers_start_of_a_line_read_back_as_active(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    fake = StartedBeforeTheAnswer()
    async with running_balance(env, fake, _state()) as handle:
        for _ in range(24 * 12):  # line 2 is ordered in the lead before line 1's end (a day)
            if len(fake.orders) == 2:
                break
            await env.sleep(timedelta(minutes=5))
        assert len(fake.orders) == 2, fake.orders
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
        result = await handle.result()
    assert result.status == BalanceStatus.Cancelled
    line_2 = [
        (event.kind, event.actor)
        for record in fake.records
        for event in record.events
        if event.seq == 2
    ]
    assert line_2 == [("ordered", "workflow"), ("activated", "carrier"), ("cancelled", "workflow")]


class NeverStarted(FakeCarrier):
    """An eSIM on no device: its line never starts, and ending it is refused (the last
    pass of an eSIM never installed), so the line is left on the eSIM."""

    @activity.defn(name="activate_line")
    async def activate_line(self, cmd: LineCommand) -> Line:
        raise ApplicationError("not yet active", type=ACTIVATION_PENDING)

    @activity.defn(name="deactivate_line")
    async def deactivate_line(self, cmd: LineCommand) -> Line:
        return cmd.line.model_copy(update={"left_on_esim": "the last pass of an eSIM"})


async def test_a_cancel_does_not_wait_for_a_line_that_never_starts(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    fake = NeverStarted()
    async with running_balance(env, fake, _state()) as handle:
        for _ in range(20):
            if fake.orders:
                break
            await env.sleep(timedelta(seconds=1))
        await env.sleep(timedelta(minutes=10))  # still waiting for the start: Failing
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
        result = await handle.result()
    assert result.status == BalanceStatus.Cancelled
    assert fake.orders == [f"{result.balance_id}:1"]
    kinds = [event.kind for record in fake.records for event in record.events]
    assert "left_on_esim" in kinds and kinds[-1] == "cancelled", kinds
    assert [(line.seq, line.state) for line in result.archived] == [(1, LineState.scheduled)]
