"""A paused or failing balance cannot be flooded: however many messages come while it
waits, the pending events stay bounded and the run hands over before its history grows
long, so Temporal never refuses the resume or cancel that follows (a run takes 10,000
signals at most)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from models.db import session_scope
from models.payloads import (
    ActionRequest,
    AuditNotice,
    BalanceStatus,
    ChangePolicy,
    Policy,
    UsageReport,
)
from models.tables import LineEvent
from services.enrolment import workflow_id
from tests.e2e.harness import OPERATOR_KEY, Rig, iccids, rig
from workflows.balance import BalanceWorkflow
from workflows.rotation import PENDING_EVENTS_MAX
from workflows.steps import HISTORY_EVENTS_MAX

POLICY = Policy(lead_seconds=10, margin_seconds=5)


async def flood(client: Client, iccid: str, count: int, pause: bool = True) -> Counter[str]:
    """``count`` signals of every kind a waiting balance may get (``pause`` too, unless
    told not to), 16 at a time; how many
    were refused, by Temporal's reason. While a run hands over, Temporal takes no more
    signals into it once it holds 10,000 (it cannot close a run whose signals keep
    coming): a sender is told so, and its next signal reaches the new run."""
    handle = client.get_workflow_handle_for(BalanceWorkflow.run, workflow_id(iccid))
    stale = UsageReport(seq=1, used_bytes=0, observed_at=datetime(2026, 1, 1, tzinfo=UTC))
    messages: list[Callable[[], Awaitable[None]]] = [
        lambda: handle.signal(BalanceWorkflow.rotate_now, ActionRequest(actor="flood")),
        lambda: handle.signal(BalanceWorkflow.usage_reported, stale),
        lambda: handle.signal(BalanceWorkflow.audit, AuditNotice(kind="missing_scheduled_line")),
    ]
    if pause:
        messages.append(lambda: handle.signal(BalanceWorkflow.pause, ActionRequest(actor="flood")))
    gate = asyncio.Semaphore(16)
    refused: Counter[str] = Counter()

    async def send(n: int) -> None:
        async with gate:
            try:
                await messages[n % len(messages)]()
            except RPCError as error:
                refused[f"{error.status.name}: {error.message}"] += 1

    await asyncio.gather(*(send(n) for n in range(count)))
    return refused


async def runs(client: Client, iccid: str) -> list[tuple[WorkflowExecutionStatus | None, int]]:
    """Each run of the balance's workflow: its status and history length."""
    found = []
    async for run in client.list_workflows(f"WorkflowId = '{workflow_id(iccid)}'"):
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        found.append((run.status, len(history.events)))
    return found


async def handed_over(client: Client, iccid: str, timeout: float = 60) -> list[Any]:
    """The runs, once a run the messages made long has handed over and the one of the
    moment is running on a shorter history."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        seen = await runs(client, iccid)
        long = [n for status, n in seen if status == WorkflowExecutionStatus.CONTINUED_AS_NEW]
        now = [n for status, n in seen if status == WorkflowExecutionStatus.RUNNING]
        if now and now[0] < HISTORY_EVENTS_MAX and max(long, default=0) >= HISTORY_EVENTS_MAX:
            return seen
        assert asyncio.get_running_loop().time() < deadline, seen
        await asyncio.sleep(0.5)


async def act(r: Rig, balance_id: str, action: str) -> None:
    answer = await r.http.post(
        f"{r.api_url}/v1/balances/{balance_id}/{action}",
        json={"reason": "after the flood"},
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
    )
    assert answer.status_code == 202, answer.text


async def test_a_paused_balance_takes_12000_messages_then_resumes_and_cancels(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await r.enrol(iccid, "compressed-600s", policy=POLICY)
        await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        await r.signal(iccid, "pause")
        paused = await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Paused, 30, "Paused")

        refused = await flood(r.client, iccid, 12_000)
        seen = await handed_over(r.client, iccid)
        print(f"refused while handing over: {refused}; runs (status, events): {seen}")
        # And a burst of updates, each a ledger event noted while the balance waits.
        handle = r.client.get_workflow_handle_for(BalanceWorkflow.run, workflow_id(iccid))
        for n in range(2 * PENDING_EVENTS_MAX + 5):
            policy = POLICY.model_copy(update={"lead_seconds": 10 + n % 2})
            await handle.execute_update(BalanceWorkflow.change_policy, ChangePolicy(policy=policy))
        with session_scope(r.settings.database_url) as session:
            noted = session.exec(select(LineEvent).where(LineEvent.kind == "policy_changed")).all()
        # Written while it waits, not held until it moves: at most a batch is pending.
        assert len(noted) >= PENDING_EVENTS_MAX + 5, len(noted)

        balance_id = paused.balance_id
        await act(r, balance_id, "resume")
        resumed = await r.wait_for(
            iccid, lambda s: s.status == BalanceStatus.Active and s.active is not None, 30, "resume"
        )
        assert resumed.active is not None and resumed.active.seq == 2
        await act(r, balance_id, "cancel")
        result = await r.client.get_workflow_handle(workflow_id(iccid)).result()
        assert result["status"] == "Cancelled", result
        assert {status for status, _ in await runs(r.client, iccid)} == {
            WorkflowExecutionStatus.CONTINUED_AS_NEW,
            WorkflowExecutionStatus.COMPLETED,
        }
        await r.assert_database_matches_carrier(iccid)


async def test_a_failing_balance_hands_over_its_order_and_buys_it_once(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """An outage holds the first order; a flood meanwhile makes the run hand the order
    over to the next run, which buys it once the carrier is back."""
    async with rig(dev_env, tmp_path) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await r.faults(outage_seconds=60)
        await r.enrol(iccid, "compressed-60s", policy=POLICY)  # Failing after 15 s
        await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Failing, 40, "Failing")
        refused = await flood(r.client, iccid, 9_000, pause=False)
        seen = await handed_over(r.client, iccid)
        print(f"refused while handing over: {refused}; runs (status, events): {seen}")
        assert not refused
        await r.faults()
        active = await r.wait_for(iccid, lambda s: s.active is not None, 60, "first line")
        assert active.active is not None and active.active.seq == 1
        await r.cancel_and_wait(iccid)
        orders = [e for e in await r.ledger(iccid) if e["action"] == "order"]
        assert len(orders) == 1, orders
        await r.assert_database_matches_carrier(iccid)
