"""Runs the Temporal worker: the Balance workflow, carrier and store activities.

    python worker.py

Any number of these may run against one task queue; Temporal spreads the work.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from activities.carrier import CarrierActivities
from activities.catalog import sync_catalogue
from activities.store import StoreActivities
from carriers import build_carriers
from carriers.base import Carrier
from config import Settings, get_settings
from models.db import SchemaOutOfDate, init_db
from workflows.balance import BalanceWorkflow

log = logging.getLogger("worker")


async def connect(settings: Settings) -> Client:
    """A Temporal client with the pydantic data converter every payload here needs."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
    )


def build_worker(
    client: Client,
    settings: Settings,
    carriers: Mapping[str, Carrier],
    executor: ThreadPoolExecutor,
    task_queue: str | None = None,
) -> Worker:
    """The worker with every workflow and activity of the product registered."""
    carrier_activities = CarrierActivities(carriers)
    store = StoreActivities(settings.database_url)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[BalanceWorkflow],
        activities=[
            carrier_activities.order_line,
            carrier_activities.activate_line,
            carrier_activities.deactivate_line,
            carrier_activities.line_usage,
            store.record_changes,
        ],
        activity_executor=executor,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_cached_workflows=settings.worker_max_cached_workflows,
    )


async def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings()
    try:
        init_db(settings.database_url, settings.auto_migrate)
    except SchemaOutOfDate as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    carriers = build_carriers(settings)
    synced = await sync_catalogue(carriers, settings.database_url)
    log.info("catalogue synced: %s", synced)
    client = await connect(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Threads are created lazily; only the store activities use them.
    with ThreadPoolExecutor(max_workers=settings.worker_max_concurrent_activities) as executor:
        async with build_worker(client, settings, carriers, executor):
            log.info("worker polling task queue %s", settings.task_queue)
            await stop.wait()
    for carrier in carriers.values():
        await carrier.aclose()


if __name__ == "__main__":
    asyncio.run(main())
