"""How fast one worker takes N workflow tasks that fall due in the same second.

    python -m bench.wakeup --workflows 10000 --pollers default autoscale --json wakeup.json
    python -m bench.wakeup --workflows 3000 --sticky-timeouts 5 600

The midnight herd's boundary without the product around it: N workflows sleep until one
moment W, then each completes (one workflow task). For each poller setting in turn, on a
fresh dev server sized as the herd's (``history_cache_args``), with the product's default
worker settings otherwise (2,000 cached workflows, 100 workflow task slots), it reports
the seconds from W until all N had completed and the rate, by the dev server's own count.

Poller settings: ``default`` is the SDK's (5 workflow task polls, a fifth of them on the
task queue the rest on the worker's sticky queue); ``autoscale`` lets the server's
backlog hints scale them (``PollerBehaviorAutoscaling``); a number N means N polls.

Sticky timeouts: how long a task due on the worker's sticky queue (the workflows it has
run) may wait there before the server moves it to the task queue; each value runs with
each poller setting. A herd's tasks wait far longer than the SDK's 10 s.

Bounded: every wait has a deadline (starting N, then ``--timeout`` after W), and each
setting's dev server and worker stop before the next starts.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import PollerBehaviorAutoscaling, Worker

from bench.common import dev_server, gather_limited, history_cache_args, report
from temporal_client import exit_with


@workflow.defn(sandboxed=False)
class WakeWorkflow:
    @workflow.run
    async def run(self, wake_at: float) -> None:
        await workflow.sleep(max(wake_at - workflow.now().timestamp(), 0.001))


def poller_args(setting: str) -> dict[str, Any]:
    if setting == "default":
        return {}
    if setting == "autoscale":
        return {"workflow_task_poller_behavior": PollerBehaviorAutoscaling()}
    return {"max_concurrent_workflow_task_polls": int(setting)}


async def completed(client: Client) -> int:
    return (await client.count_workflows("ExecutionStatus = 'Completed'")).count


async def one_setting(
    n: int, setting: str, sticky: float, wake_after: float, timeout: float
) -> dict[str, Any]:
    async with await dev_server(history_cache_args(n)) as env:
        client, queue = env.client, f"wakeup-{uuid.uuid4().hex[:8]}"
        async with Worker(
            client,
            task_queue=queue,
            workflows=[WakeWorkflow],
            max_cached_workflows=2000,
            max_concurrent_workflow_tasks=100,
            sticky_queue_schedule_to_start_timeout=timedelta(seconds=sticky),
            **poller_args(setting),
        ):
            wake_at = time.time() + wake_after
            jobs = [
                lambda i=i: client.start_workflow(
                    WakeWorkflow.run, wake_at, id=f"wake-{i}", task_queue=queue
                )
                for i in range(n)
            ]
            await gather_limited(jobs, 50)
            if time.time() > wake_at:
                raise SystemExit(f"starting {n} took past the wake moment: raise --wake-after")
            await asyncio.sleep(wake_at - time.time())
            deadline, done = wake_at + timeout, 0
            while done < n and time.time() < deadline:
                await asyncio.sleep(1)
                done = await completed(client)
            seconds = time.time() - wake_at
            if done < n:
                raise SystemExit(f"{setting}: {done} of {n} completed {timeout:.0f} s after wake")
    return {"seconds": round(seconds, 1), "per_second": round(n / seconds, 1)}


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"workflows": args.workflows}
    for setting in args.pollers:
        for sticky in args.sticky_timeouts:
            name = setting if args.sticky_timeouts == [10.0] else f"{setting} sticky {sticky:g} s"
            result[name] = await one_setting(
                args.workflows, setting, sticky, args.wake_after, args.timeout
            )
            print(name, result[name], file=sys.stderr, flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflows", type=int, default=10000)
    parser.add_argument("--pollers", nargs="+", default=["default", "autoscale"])
    parser.add_argument(
        "--sticky-timeouts", nargs="+", type=float, default=[10.0], help="seconds (SDK: 10)"
    )
    parser.add_argument("--wake-after", type=float, default=150.0, help="seconds from start")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    for setting in args.pollers:
        if setting not in ("default", "autoscale") and not setting.isdigit():
            parser.error(f"--pollers: {setting!r} is not default, autoscale or a number")
    if any(sticky <= 0 for sticky in args.sticky_timeouts):
        parser.error("--sticky-timeouts: each must be more than 0 seconds")
    return report(asyncio.run(measure(args)), args.json)


if __name__ == "__main__":
    exit_with(main)
