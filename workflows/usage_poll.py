"""UsagePollWorkflow: one poll of one carrier's usage; and the Schedules that start it.

Carriers without usage webhooks (``settings.usage_poll_carriers``, Webbing by default)
are polled by a Temporal Schedule per carrier, id ``usage-poll-{carrier}``, every
``settings.usage_poll_interval_seconds``. Each action starts this workflow, which runs
one activity that reads the carrier's usage in pages and signals only the balances whose
line crossed a threshold (see :mod:`activities.usage_poll`).

Overlap policy SKIP: a poll still running when the next is due makes the schedule skip
that one, so a slow carrier never piles polls up. A poll's run is bounded (a few
attempts, a time limit) so a stuck one cannot make the schedule skip for long. A poll
whose carrier keeps failing (an outage) completes with ``gave_up`` and a warning rather
than failing: the next poll, an interval later, reads again, and nothing is lost since
each poll compares the carrier's totals with the watermarks.

:func:`ensure_usage_poll_schedules` creates the schedules or brings them up to date
(interval, task queue) at every worker start; any number of workers may call it at once.
A carrier removed from the setting keeps its schedule until an operator deletes it
(``temporal schedule delete --schedule-id usage-poll-CARRIER``).
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

with workflow.unsafe.imports_passed_through():
    from temporalio.client import Client, Schedule

    from activities.usage_poll import UsagePollActivities
    from config import Settings
    from models.payloads import UsagePollInput, UsagePollResult
    from workflows.schedules import ensure_schedule, every

SCHEDULE_PREFIX = "usage-poll"
# One attempt reads every page; a page's heartbeat lets a retry resume after it.
POLL_CALL = timedelta(minutes=10)
POLL_HEARTBEAT = timedelta(minutes=1)
POLL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
    non_retryable_error_types=["UnknownCarrier", "CarrierRejected"],
)
# A poll's run never outlives this, so SKIP does not hold the schedule for long.
POLL_RUN_LIMIT = timedelta(minutes=30)


@workflow.defn
class UsagePollWorkflow:
    """One poll of one carrier's usage; started by the Schedule ``usage-poll-{carrier}``."""

    @workflow.run
    async def run(self, req: UsagePollInput) -> UsagePollResult:
        try:
            result: UsagePollResult = await workflow.execute_activity_method(
                UsagePollActivities.poll_usage,
                req,
                start_to_close_timeout=POLL_CALL,
                heartbeat_timeout=POLL_HEARTBEAT,
                retry_policy=POLL_RETRY,
                summary=f"read {req.carrier} usage, signal crossings",
            )
        except ActivityError as error:
            cause = str(error.cause or error)
            workflow.logger.warning("usage poll of %s gave up: %s", req.carrier, cause)
            return UsagePollResult(gave_up=cause)
        return result


def poll_carriers(settings: Settings) -> list[str]:
    """The carriers named in ``usage_poll_carriers``, in order, without repeats."""
    names = (name.strip() for name in settings.usage_poll_carriers.split(","))
    return list(dict.fromkeys(name for name in names if name))


def usage_poll_schedule(settings: Settings, carrier: str, schedule_id: str) -> Schedule:
    """The schedule that polls ``carrier`` every ``usage_poll_interval_seconds``."""
    return every(
        settings.usage_poll_interval_seconds,
        UsagePollWorkflow.run,
        UsagePollInput(carrier=carrier),
        schedule_id=schedule_id,
        task_queue=settings.task_queue,
        run_limit=POLL_RUN_LIMIT,
    )


async def ensure_usage_poll_schedules(
    client: Client, settings: Settings, prefix: str = SCHEDULE_PREFIX
) -> list[str]:
    """Create, or update in place, the schedule ``{prefix}-{carrier}`` of every polled
    carrier; returns their ids. ``prefix`` lets a test rig that shares a namespace with
    others keep its own schedules."""
    ids: list[str] = []
    for carrier in poll_carriers(settings):
        schedule_id = f"{prefix}-{carrier}"
        await ensure_schedule(
            client, schedule_id, usage_poll_schedule(settings, carrier, schedule_id)
        )
        ids.append(schedule_id)
    return ids
