"""The herd's ``activity_retries`` figure, read from real histories on the dev server:
an attempt the server timed out and an attempt that failed are each counted once, under
their own activity, and only for the workflows asked about."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from bench.common import activity_retries

RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=100), maximum_attempts=3)


@activity.defn
async def slow_first() -> None:
    """Outlives its 1 s on the first attempt: the server times it out."""
    if activity.info().attempt == 1:
        await asyncio.sleep(3)


@activity.defn
async def fails_first() -> None:
    if activity.info().attempt == 1:
        raise ApplicationError("carrier said 503")


@activity.defn
async def fine() -> None:
    return None


@workflow.defn(name="RetriedActivities")
class RetriedActivities:
    @workflow.run
    async def run(self) -> None:
        timeout = timedelta(seconds=1)
        for act in (slow_first, fails_first, fine):
            await workflow.execute_activity(act, start_to_close_timeout=timeout, retry_policy=RETRY)


async def test_retries_are_counted_by_activity_and_cause(dev_env: WorkflowEnvironment) -> None:
    client, queue = dev_env.client, f"retries-{uuid.uuid4()}"
    ids = [f"retried-{uuid.uuid4()}" for _ in range(3)]
    async with Worker(
        client,
        task_queue=queue,
        workflows=[RetriedActivities],
        activities=[slow_first, fails_first, fine],
        workflow_runner=UnsandboxedWorkflowRunner(),
    ):
        for wf_id in ids:
            await client.execute_workflow(RetriedActivities.run, id=wf_id, task_queue=queue)
    # Two of the three asked about: the third's retries are not theirs.
    counted = await activity_retries(client, set(ids[:2]), "RetriedActivities")
    assert counted == {
        "fails_first": {"retried": 2},
        "slow_first": {"retried": 2, "after_start_to_close_timeout": 2},
    }
