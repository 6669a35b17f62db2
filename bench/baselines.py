"""The two yardsticks bench/herd.py runs beside the product.

``BareWorkflow``: what the engine itself costs on this machine - one timer and three
no-op activities per rotation, continuing as new after each, as the Balance workflow
does. The product's rotation rate divided by this one's is the ``efficiency`` figure.

``NaiveWorkflow``: what a sweep-based design does at a boundary - wait until the line
has expired, then order and activate the next one. Every second that takes is a second
the eSIM has no line; its gaps are reported beside the product's.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.carrier import CarrierActivities
    from carriers.errors import NON_RETRYABLE
    from models.payloads import Line, LineCommand, OrderLineInput, ProductSpec

NOOP = timedelta(seconds=10)
CARRIER_CALL = timedelta(seconds=30)
POLL = RetryPolicy(
    initial_interval=timedelta(milliseconds=300),
    backoff_coefficient=1.5,
    maximum_interval=timedelta(seconds=5),
    non_retryable_error_types=NON_RETRYABLE,
)


class BareInput(BaseModel):
    until: datetime
    timer_seconds: float = 1.0
    rotations: int = 0


@activity.defn(name="bench_noop")
async def noop(step: int) -> int:
    return step


@workflow.defn
class BareWorkflow:
    """Timer, three no-op activities, continue as new - until ``until``."""

    @workflow.run
    async def run(self, req: BareInput) -> int:
        if workflow.now() >= req.until:
            return req.rotations
        await workflow.sleep(req.timer_seconds)
        for step in range(3):
            await workflow.execute_activity(noop, step, start_to_close_timeout=NOOP)
        workflow.continue_as_new(req.model_copy(update={"rotations": req.rotations + 1}))


class NaiveInput(BaseModel):
    balance_id: str
    iccid: str
    carrier: str
    product: ProductSpec


@workflow.defn
class NaiveWorkflow:
    """Line 1 now; at its expiry (not before), order and activate line 2."""

    @workflow.run
    async def run(self, req: NaiveInput) -> Line:
        first = await self._provision(req, 1)
        assert first.ends_at is not None
        await workflow.sleep(max(first.ends_at - workflow.now(), timedelta(0)))
        return await self._provision(req, 2)

    async def _provision(self, req: NaiveInput, seq: int) -> Line:
        order = OrderLineInput(
            balance_id=req.balance_id,
            iccid=req.iccid,
            carrier=req.carrier,
            seq=seq,
            product=req.product,
        )
        ordered: Line = await workflow.execute_activity_method(
            CarrierActivities.order_line, order, start_to_close_timeout=CARRIER_CALL
        )
        active: Line = await workflow.execute_activity_method(
            CarrierActivities.activate_line,
            LineCommand(carrier=req.carrier, iccid=req.iccid, line=ordered),
            start_to_close_timeout=CARRIER_CALL,
            retry_policy=POLL,
        )
        return active
