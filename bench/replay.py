"""What one replay costs the worker, in Temporal's sandbox and without it.

    python -m bench.replay --rounds 3 --copies 10 --json replay.json

A worker replays a balance's run whenever it wakes a balance it no longer caches: at a
midnight herd larger than WORKER_MAX_CACHED_WORKFLOWS, every balance, twice (the order,
then the switch). This replays the recorded runs of tests/workflows/histories with the
runner each setting of WORKER_WORKFLOW_SANDBOX gives, alternating the two ``--rounds``
times in one process, and reports replays per second of each and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from bench.common import report
from config import Settings
from temporal_client import exit_with
from worker import workflow_runner
from workflows.balance import BalanceWorkflow

HISTORIES = Path(__file__).resolve().parent.parent / "tests" / "workflows" / "histories"


def histories() -> list[WorkflowHistory]:
    return [
        WorkflowHistory.from_json(path.stem, path.read_text())
        for path in sorted(HISTORIES.glob("*.json"))
    ]


async def replays_per_second(sandbox: bool, runs: list[WorkflowHistory], copies: int) -> float:
    """Every run replayed ``copies`` times by one replayer, as one worker would."""
    replayer = Replayer(
        workflows=[BalanceWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=workflow_runner(Settings(worker_workflow_sandbox=sandbox)),
    )
    began = time.perf_counter()
    done = 0
    async with replayer.workflow_replay_iterator(_many(runs, copies)) as results:
        async for result in results:
            if result.replay_failure is not None:
                raise RuntimeError(f"a recorded run does not replay: {result.replay_failure}")
            done += 1
    return done / (time.perf_counter() - began)


async def _many(runs: list[WorkflowHistory], copies: int) -> AsyncIterator[WorkflowHistory]:
    for _ in range(copies):
        for run in runs:
            yield run


async def measure(rounds: int, copies: int) -> dict[str, Any]:
    runs = histories()
    rates: dict[str, list[float]] = {"sandbox": [], "unsandboxed": []}
    for _ in range(rounds):
        rates["sandbox"].append(await replays_per_second(True, runs, copies))
        rates["unsandboxed"].append(await replays_per_second(False, runs, copies))
    best = {name: max(values) for name, values in rates.items()}
    return {
        "runs": len(runs),
        "events_per_run": round(sum(len(r.events) for r in runs) / len(runs), 1),
        "replays_per_second": {name: round(value, 1) for name, value in best.items()},
        "unsandboxed_over_sandbox": round(best["unsandboxed"] / best["sandbox"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternations of the two")
    parser.add_argument("--copies", type=int, default=10, help="replays of each run per round")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    if args.rounds < 1 or args.copies < 1:
        parser.error("--rounds and --copies must be at least 1")
    return report(asyncio.run(measure(args.rounds, args.copies)), args.json)


if __name__ == "__main__":
    exit_with(main)
