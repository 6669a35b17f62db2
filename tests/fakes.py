"""Stateful fakes registered under the real activity names with the real payload types."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from models.payloads import (
    BalanceState,
    BalanceStatusView,
    Line,
    LineCommand,
    LineState,
    OrderLineInput,
    RecordChanges,
    UsageReport,
)
from workflows.balance import BalanceWorkflow


class FakeCarrier:
    """A carrier that activates at once, on the server's (possibly skipped) clock."""

    def __init__(self) -> None:
        self.lines: dict[str, Line] = {}
        self.orders: list[str] = []
        self.records: list[RecordChanges] = []
        self.run_ids: set[str] = set()
        self.usage: dict[int, int] = defaultdict(int)

    @staticmethod
    def _now() -> datetime:
        return activity.info().current_attempt_scheduled_time

    @activity.defn(name="order_line")
    async def order_line(self, req: OrderLineInput) -> Line:
        self.run_ids.add(activity.info().workflow_run_id or "")
        for line in self.lines.values():
            if line.reference == req.reference:
                return line
        self.orders.append(req.reference)
        line = Line(
            seq=req.seq,
            reference=req.reference,
            product_id=req.product.id,
            carrier_product_id=req.product.carrier_product_id,
            allowance_bytes=req.product.allowance_bytes,
            validity_seconds=req.product.validity_seconds,
            line_id=f"pkg-{len(self.lines) + 1}",
            ordered_at=self._now(),
            price_cents=req.product.price_cents,
            currency=req.product.currency,
        )
        self.lines[line.line_id or ""] = line
        return line

    @activity.defn(name="activate_line")
    async def activate_line(self, cmd: LineCommand) -> Line:
        line = self.lines[cmd.line.line_id or ""]
        if line.state == LineState.scheduled:
            now = self._now()
            line.state = LineState.active
            line.activated_at = now
            line.ends_at = now + timedelta(seconds=line.validity_seconds)
        return line

    @activity.defn(name="deactivate_line")
    async def deactivate_line(self, cmd: LineCommand) -> Line:
        line = self.lines[cmd.line.line_id or ""]
        if line.ended_at is None:
            line.ended_at = min(self._now(), line.ends_at or self._now())
            line.state = cmd.end_state or LineState.cancelled
        return line

    @activity.defn(name="line_usage")
    async def line_usage(self, cmd: LineCommand) -> UsageReport:
        return UsageReport(
            seq=cmd.line.seq, used_bytes=self.usage[cmd.line.seq], observed_at=self._now()
        )

    @activity.defn(name="record_changes")
    async def record_changes(self, changes: RecordChanges) -> None:
        self.run_ids.add(activity.info().workflow_run_id or "")
        self.records.append(changes)

    def activities(self) -> list[object]:
        return [
            self.order_line,
            self.activate_line,
            self.deactivate_line,
            self.line_usage,
            self.record_changes,
        ]


@asynccontextmanager
async def running_balance(
    env: WorkflowEnvironment, carrier: FakeCarrier, state: BalanceState, **worker: Any
) -> AsyncIterator[WorkflowHandle[BalanceWorkflow, BalanceStatusView]]:
    """``state``'s balance started on a worker of its own queue with ``carrier``'s
    activities (``worker``: more ``Worker`` options), which runs until the block ends."""
    queue = str(uuid.uuid4())
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[BalanceWorkflow],
        activities=carrier.activities(),
        **worker,
    ):
        yield await env.client.start_workflow(
            BalanceWorkflow.run, state, id=f"balance-{uuid.uuid4()}", task_queue=queue
        )
