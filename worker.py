"""Runs the Temporal worker: the Balance workflow, carrier and store activities.

    python worker.py

Any number of these may run against one task queue; Temporal spreads the work. Beside the
worker, each process serves its Prometheus metrics (``WORKER_METRICS_PORT``) and runs a
notification dispatcher (``services/notify.py``, when ``NOTIFY_URL`` is set); neither
is in a rotation's path.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.audit import AuditActivities
from activities.audit_restart import RestoreActivities
from activities.carrier import CarrierActivities
from activities.store import StoreActivities
from activities.usage_poll import UsagePollActivities
from carriers import build_carriers
from carriers.base import Carrier
from config import Settings, get_settings
from models.claims import OrderClaims
from models.db import SchemaOutOfDate, init_db
from models.prices import CataloguePrices
from services.catalog import sync_catalogue
from services.metrics import serve as serve_metrics
from services.metrics import watch_balances
from services.notify import Dispatcher
from temporal_client import TemporalConnectError, connect, exit_with
from workflows.audit import AuditWorkflow, ensure_audit_schedule
from workflows.balance import BalanceWorkflow
from workflows.carrier_lines import CarrierLinesWorkflow
from workflows.usage_poll import UsagePollWorkflow, ensure_usage_poll_schedules

log = logging.getLogger("worker")

# The sandbox still restricts what workflow code may call (no clock, no I/O), but takes
# our workflow modules as they are loaded instead of re-importing them for every new
# run: a rotation continues as new, and re-compiling workflows/balance.py for each run
# was the largest single cost of a midnight herd (bench/herd.py, BENCHMARKS.md). Those
# modules keep no state of their own at module level, which is what re-importing guards.
WORKFLOW_RUNNER = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules("workflows")
)


def workflow_runner(settings: Settings) -> WorkflowRunner:
    """The sandbox (WORKER_WORKFLOW_SANDBOX) or none."""
    return WORKFLOW_RUNNER if settings.worker_workflow_sandbox else UnsandboxedWorkflowRunner()


def build_worker(
    client: Client,
    settings: Settings,
    carriers: Mapping[str, Carrier],
    executor: ThreadPoolExecutor,
    task_queue: str | None = None,
) -> Worker:
    """The worker with every workflow and activity of the product registered."""
    claims = OrderClaims(settings.database_url, settings.carrier_timeout_seconds)
    prices = CataloguePrices(settings.database_url)
    carrier_activities = CarrierActivities(carriers, claims, prices)
    store = StoreActivities(settings.database_url)
    usage_poll = UsagePollActivities(carriers, client, settings.database_url)
    audit = AuditActivities(
        carriers, client, settings.database_url, task_queue or settings.task_queue
    )
    restore = RestoreActivities(carriers, settings.database_url)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[BalanceWorkflow, UsagePollWorkflow, AuditWorkflow, CarrierLinesWorkflow],
        activities=[
            carrier_activities.order_line,
            carrier_activities.activate_line,
            carrier_activities.deactivate_line,
            carrier_activities.line_usage,
            carrier_activities.find_carrier_lines,
            store.record_changes,
            usage_poll.poll_usage,
            audit.audit_page,
            restore.restore_balance,
        ],
        activity_executor=executor,
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        max_cached_workflows=settings.worker_max_cached_workflows,
        sticky_queue_schedule_to_start_timeout=timedelta(
            seconds=settings.worker_sticky_timeout_seconds
        ),
        workflow_runner=workflow_runner(settings),
    )


async def main() -> None:
    settings = get_settings()
    logging.basicConfig(
        level=settings.worker_log_level.upper(), format="%(asctime)s %(name)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        init_db(settings.database_url, settings.auto_migrate)
    except SchemaOutOfDate as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    try:
        client = await connect(settings)
    except TemporalConnectError as error:
        log.error("%s", error)
        raise SystemExit(1) from None
    carriers = build_carriers(settings)
    synced = await sync_catalogue(carriers, settings.database_url)
    log.info("catalogue synced: %s", synced)
    polled = await ensure_usage_poll_schedules(client, settings)
    log.info("usage poll schedules: %s", ", ".join(polled) or "none")
    log.info("audit schedule: %s", await ensure_audit_schedule(client, settings))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stop_metrics = serve_metrics(settings.worker_metrics_port, settings.worker_metrics_host)
    # Beside the worker, never in a rotation's path: gauges and outbound notifications.
    background = [asyncio.create_task(watch_balances(settings.database_url, stop))]
    if dispatcher := Dispatcher.from_settings(settings):
        background.append(asyncio.create_task(dispatcher.run(stop)))
    # Threads are created lazily; only the store activities use them.
    with ThreadPoolExecutor(max_workers=settings.worker_activity_threads) as executor:
        async with build_worker(client, settings, carriers, executor):
            log.info("worker polling task queue %s", settings.task_queue)
            await stop.wait()
    await asyncio.gather(*background)
    if stop_metrics:
        stop_metrics()
    for carrier in carriers.values():
        await carrier.aclose()


def run() -> int:
    asyncio.run(main())
    return 0


if __name__ == "__main__":
    exit_with(run)
