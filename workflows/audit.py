"""AuditWorkflow: one audit of every open balance; and the Schedule that starts it.

The Schedule ``audit`` starts it every ``settings.audit_interval_seconds`` (300 s by
default) with overlap policy SKIP: an audit still running when the next is due makes the
schedule skip that one. Each run walks the open balances in pages (one activity per
page, see :mod:`activities.audit` for what is compared and the repair rules) and
returns a report of what it found; every finding is also a ledger event and a metric.

A fleet too large for one run's history continues as new with its cursor and the report
so far. A run is bounded (``AUDIT_RUN_LIMIT``), so a stuck one cannot make the schedule
skip for long. :func:`ensure_audit_schedule` creates the schedule or brings it up to date
(interval, task queue) at every worker start; any number of workers may call it at once.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client, Schedule

    from activities.audit import AuditActivities
    from config import Settings
    from models.audit import AuditInput, AuditPage, AuditReport
    from workflows.schedules import ensure_schedule, every

SCHEDULE_ID = "audit"
# One page: a carrier read per balance, a bounded number at once; heartbeat per balance.
PAGE_CALL = timedelta(minutes=5)
PAGE_HEARTBEAT = timedelta(minutes=1)
PAGE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=30)
)
AUDIT_RUN_LIMIT = timedelta(hours=1)


@workflow.defn
class AuditWorkflow:
    """One audit of every open balance; started by the Schedule ``audit``."""

    @workflow.run
    async def run(self, req: AuditInput) -> AuditReport:
        after, report = req.after, req.report
        while True:
            page = await workflow.execute_activity_method(
                AuditActivities.audit_page,
                AuditPage(
                    after=after,
                    limit=req.page_size,
                    concurrency=req.concurrency,
                    settle_seconds=req.settle_seconds,
                    switch_allowance_seconds=req.switch_allowance_seconds,
                ),
                start_to_close_timeout=PAGE_CALL,
                heartbeat_timeout=PAGE_HEARTBEAT,
                retry_policy=PAGE_RETRY,
                summary=f"audit {req.page_size} balances after {after or 'the first'}",
            )
            report = report.add(page.report)
            if page.next_after is None:
                return report
            after = page.next_after
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(req.model_copy(update={"after": after, "report": report}))


def audit_schedule(settings: Settings, schedule_id: str = SCHEDULE_ID) -> Schedule:
    """The schedule that audits every ``audit_interval_seconds``, skipping overlaps."""
    return every(
        settings.audit_interval_seconds,
        AuditWorkflow.run,
        AuditInput(),
        schedule_id=schedule_id,
        task_queue=settings.task_queue,
        run_limit=AUDIT_RUN_LIMIT,
    )


async def ensure_audit_schedule(
    client: Client, settings: Settings, schedule_id: str = SCHEDULE_ID
) -> str:
    """Create, or update in place, the audit schedule; returns its id. ``schedule_id``
    lets a test rig that shares a namespace with others keep its own."""
    await ensure_schedule(client, schedule_id, audit_schedule(settings, schedule_id))
    return schedule_id
