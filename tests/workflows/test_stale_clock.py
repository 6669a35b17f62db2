"""A worker that wakes a run with a stale clock must not fork the run's history.

Found by tests/e2e/test_scale_out.py (temporalio 1.35). One worker was killed; the
other, handed a run whose order timer had fired, woke it with the clock of the run's
first workflow task (its new timer had the first timer's duration to the microsecond),
most likely because it had built the run to answer a query while the killed worker held
that task. So the run slept again, where every replay of it, reading the true clock,
orders. The next replay (a query, a cache eviction, another worker) failed with a
non-determinism error, and the balance was stuck.

Here every run reads the clock of its first task for its whole life: the worst such a
worker could do. The balance must still rotate, and its histories must replay on the true
clock.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.testing import WorkflowEnvironment

from models.payloads import ActionRequest
from tests.fakes import FakeCarrier, running_balance
from tests.replay import replayer
from tests.workflows.record_histories import chain
from tests.workflows.test_balance_long_term import DAILY, _state
from worker import WORKFLOW_RUNNER
from workflows.balance import BalanceWorkflow
from workflows.clock import Clock

# The daily pass, made a 10-minute one.
TEN_MINUTES = DAILY.model_copy(update={"id": "telna-10min", "validity_seconds": 600})


def _stuck_clock(true_now: Callable[[], datetime]) -> Callable[[], datetime]:
    """``workflow.now`` as that worker read it: each run's clock stops at its first task."""
    first: dict[str, datetime] = {}

    def now() -> datetime:
        return first.setdefault(workflow.info().run_id, true_now())

    return now


async def _run_on_stuck_clock(
    env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> tuple[list[WorkflowHistory], int]:
    """One balance for 11 minutes of a 10-minute pass: the histories of its runs and the
    rotations it made."""
    state = _state(TEN_MINUTES)
    with monkeypatch.context() as patch:
        patch.setattr(workflow, "now", _stuck_clock(workflow.now))
        async with running_balance(
            env, FakeCarrier(), state, workflow_runner=WORKFLOW_RUNNER
        ) as handle:
            await env.sleep(timedelta(minutes=11))
            rotations = (await handle.query(BalanceWorkflow.status)).rotations
            await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
            await handle.result()
    return await chain(env.client, handle.id), rotations


async def _replays_on_true_clock(histories: list[WorkflowHistory]) -> None:
    for history in histories:
        await replayer().replay_workflow(history)


async def test_a_run_woken_on_a_stale_clock_rotates_and_replays_on_the_true_clock(
    time_skipping_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    histories, rotations = await _run_on_stuck_clock(time_skipping_env, monkeypatch)
    assert rotations == 1
    await _replays_on_true_clock(histories)


async def test_without_the_floor_a_stale_clock_forks_the_history(
    time_skipping_env: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Proof the test above can fail: the workflow as it was, reading the raw clock."""
    monkeypatch.setattr(Clock, "now", lambda self: workflow.now())
    histories, rotations = await _run_on_stuck_clock(time_skipping_env, monkeypatch)
    assert rotations == 0  # woken by the order timer, it slept again
    monkeypatch.undo()
    with pytest.raises(workflow.NondeterminismError):
        await _replays_on_true_clock(histories)
