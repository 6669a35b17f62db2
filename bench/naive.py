"""The naive baseline of the midnight herd, in a process of its own.

    python -m bench.naive PLAN.json

``bench/herd.py`` writes the plan (dev server address, task queue, the baseline's own
carrier account, the pass, the boundary and the eSIMs) and runs this beside the
product's worker, so the expire-then-provision design meets the same midnight on the
same box without sharing the product worker's process: the product's rotation rate and
memory are then its own. It starts one ``NaiveWorkflow`` per eSIM on its own task queue,
waits until every one has provisioned line 2 or the deadline has passed, and exits;
the herd reads the gaps from the baseline's simulators (``/_sim/packages``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.carrier import CarrierActivities
from bench.baselines import NaiveInput, NaiveWorkflow
from bench.common import carrier_clients, gather_limited
from models.payloads import ProductSpec
from temporal_client import exit_with
from worker import WORKFLOW_RUNNER


class NaivePlan(BaseModel):
    """What the herd hands to this process."""

    temporal_address: str
    namespace: str
    task_queue: str
    sims: dict[str, str]
    rate_limit: float
    specs: dict[str, ProductSpec]
    esims: list[tuple[str, str]]  # (iccid, carrier)
    deadline: float  # epoch seconds: give up waiting for line 2 then
    max_concurrent_activities: int = 200


async def run(plan: NaivePlan) -> dict[str, Any]:
    client = await Client.connect(
        plan.temporal_address, namespace=plan.namespace, data_converter=pydantic_data_converter
    )
    carriers = carrier_clients(plan.sims, plan.rate_limit)
    activities = CarrierActivities(carriers)
    try:
        async with Worker(
            client,
            task_queue=plan.task_queue,
            workflows=[NaiveWorkflow],
            activities=[activities.order_line, activities.activate_line],
            max_concurrent_activities=plan.max_concurrent_activities,
            workflow_runner=WORKFLOW_RUNNER,
        ):
            handles = []

            async def start(index: int, iccid: str, carrier: str) -> None:
                req = NaiveInput(
                    balance_id=f"naive{index}",
                    iccid=iccid,
                    carrier=carrier,
                    product=plan.specs[carrier],
                )
                handles.append(
                    await client.start_workflow(
                        NaiveWorkflow.run, req, id=f"naive-{iccid}", task_queue=plan.task_queue
                    )
                )

            jobs = [partial(start, i, *esim) for i, esim in enumerate(plan.esims)]
            await gather_limited(jobs, 50)
            finished = 0
            try:
                async with asyncio.timeout(max(plan.deadline - time.time(), 1.0)):
                    for handle in handles:
                        await handle.result()
                        finished += 1
            except TimeoutError:
                pass
    finally:
        for carrier in carriers.values():
            await carrier.aclose()
    return {"started": len(handles), "finished": finished}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m bench.naive PLAN.json", file=sys.stderr)
        return 2
    logging.getLogger("temporalio").setLevel(logging.ERROR)  # retried activation polls
    plan = NaivePlan.model_validate_json(Path(args[0]).read_text())
    print(json.dumps(asyncio.run(run(plan))))
    return 0


if __name__ == "__main__":
    exit_with(main)
