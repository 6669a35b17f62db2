"""CarrierLinesWorkflow: what a carrier says of one eSIM's lines, read by a worker.

The dashboard's eSIM page draws the carrier's own answer for the ICCID beside our lines.
Read from the API process, that call would bypass the worker's per-carrier rate limit
(``carriers/ratelimit.py``) and its metrics, and each viewer's refresh would be one more
call. So the API starts this workflow, id ``carrier-lines-{iccid}``, on the product's
task queue with id-conflict policy USE_EXISTING (viewers asking at once share one run),
and keeps the answer a few seconds (``DASHBOARD_CARRIER_CACHE_SECONDS``).

Its one activity calls ``find_lines`` once, without retries: a page shows an unreadable
carrier as such rather than wait for it. A carrier that cannot be read completes the run
with ``error``, not as a failed workflow, so a carrier outage does not fill the Web UI
with failures. A run that no worker takes up ends by itself after ``RUN_LIMIT``.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.carrier import CarrierActivities, CarrierLinesInput, CarrierLinesResult

ID_PREFIX = "carrier-lines"
# One carrier call, including its wait for a turn under the worker's rate limit.
READ_TIMEOUT = timedelta(seconds=5)
# Queued behind a busy worker's activities, then the call itself.
READ_DEADLINE = timedelta(seconds=10)
RUN_LIMIT = timedelta(seconds=30)


def carrier_lines_id(iccid: str) -> str:
    return f"{ID_PREFIX}-{iccid}"


@workflow.defn
class CarrierLinesWorkflow:
    """One read of an eSIM's lines at its carrier; id ``carrier-lines-{iccid}``."""

    @workflow.run
    async def run(self, req: CarrierLinesInput) -> CarrierLinesResult:
        try:
            return await workflow.execute_activity_method(
                CarrierActivities.find_carrier_lines,
                req,
                start_to_close_timeout=READ_TIMEOUT,
                schedule_to_close_timeout=READ_DEADLINE,
                retry_policy=RetryPolicy(maximum_attempts=1),
                summary=f"find_lines at {req.carrier}",
            )
        except ActivityError as error:
            return CarrierLinesResult(error=_why(error))


def _why(error: ActivityError) -> str:
    cause = error.cause
    if isinstance(cause, ApplicationError) and cause.type:
        return f"{cause.type}: {cause.message}"
    return str(cause or error)
