"""A signal sent while a balance hands over to a new run is never lost.

Right after its first line is active, a balance continues as new (the hand-over after
bring-up). An operator's pause sent in that moment reaches either the closing run, which
then carries it over, or the new one; either way the balance pauses.
"""

from __future__ import annotations

import asyncio
import random
import uuid

from temporalio import activity
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from models.payloads import ActionRequest, BalanceStatus, Line, LineCommand
from tests.fakes import FakeCarrier
from tests.workflows.test_balance_long_term import _state
from workflows.balance import BalanceWorkflow

BALANCES = 40


class HeldActivation(FakeCarrier):
    """Each balance's first activation waits until the test lets it go."""

    def __init__(self) -> None:
        super().__init__()
        self.entered: dict[str, asyncio.Event] = {}
        self.release: dict[str, asyncio.Event] = {}

    def gates(self, balance_id: str) -> tuple[asyncio.Event, asyncio.Event]:
        return (
            self.entered.setdefault(balance_id, asyncio.Event()),
            self.release.setdefault(balance_id, asyncio.Event()),
        )

    @activity.defn(name="activate_line")
    async def activate_line(self, cmd: LineCommand) -> Line:
        if cmd.line.seq == 1:
            entered, release = self.gates(cmd.line.reference.split(":")[0])
            entered.set()
            await release.wait()
        return await super().activate_line(cmd)


async def test_a_pause_sent_at_the_hand_over_after_bring_up_pauses_the_balance(
    dev_env: WorkflowEnvironment,
) -> None:
    env = dev_env
    fake = HeldActivation()
    queue = str(uuid.uuid4())
    rng = random.Random(7)

    async def one() -> tuple[str, BalanceStatus, bool]:
        state = _state()
        entered, release = fake.gates(state.balance_id)
        handle = await env.client.start_workflow(
            BalanceWorkflow.run, state, id=f"balance-{uuid.uuid4()}", task_queue=queue
        )
        await entered.wait()
        release.set()
        # Within 0.4 s of the result: the signal lands in the closing run's last task,
        # fails its completion (the server's "unhandled command") or reaches the new run.
        await asyncio.sleep(rng.uniform(0, 0.4))
        await handle.signal(BalanceWorkflow.pause, ActionRequest(actor="test"))
        status = await handle.query(BalanceWorkflow.status)
        for _ in range(100):
            if status.status == BalanceStatus.Paused:
                break
            await asyncio.sleep(0.1)
            status = await handle.query(BalanceWorkflow.status)
        return state.balance_id, status.status, status.paused

    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[BalanceWorkflow],
        activities=fake.activities(),
    ):
        results = await asyncio.gather(*(one() for _ in range(BALANCES)))
    stuck = [result for result in results if result[1] != BalanceStatus.Paused]
    assert not stuck, stuck
