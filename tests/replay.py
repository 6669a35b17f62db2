"""Replay of real runs against today's code, with the worker's own runner and converter.

A run whose replay orders a different command fails on the next worker that has to
rebuild it (after a kill, a cache eviction or a query), and its balance is stuck.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOW_RUNNER
from workflows.balance import BalanceWorkflow


def replayer() -> Replayer:
    """The worker's converter, and the sandbox (the worker's own runs skip it by default):
    a replay here also fails on a call the sandbox forbids."""
    return Replayer(
        workflows=[BalanceWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=WORKFLOW_RUNNER,
    )


async def replay_failures(client: Client, query: str = "", keep: Path | None = None) -> list[str]:
    """Every BalanceWorkflow run (that the visibility ``query`` lists) is replayed; one line
    per run that fails. A failed run's history is written to ``keep`` (the Web UI's JSON)."""
    replaying = replayer()
    failed: list[str] = []
    listed = "WorkflowType = 'BalanceWorkflow'" + (f" AND ({query})" if query else "")
    async for run in client.list_workflows(listed):
        history = await client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history()
        result = await replaying.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is None:
            continue
        failed.append(f"run {run.id}/{run.run_id} does not replay: {result.replay_failure}")
        if keep is not None:
            keep.mkdir(parents=True, exist_ok=True)
            (keep / f"{run.id}-{run.run_id}.json").write_text(history.to_json())
    return failed
