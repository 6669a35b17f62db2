"""The carrier's lines of an eSIM for its dashboard page: read by a worker, kept a while.

The API never calls a carrier for a page: it runs ``CarrierLinesWorkflow``
(``workflows/carrier_lines.py``) on the product's task queue, so the read goes through a
worker's carrier clients, under their rate limit and in their metrics. The answer is
kept per ICCID for ``DASHBOARD_CARRIER_CACHE_SECONDS``, and a view arriving while a read
is under way waits for that read: a page refreshing itself every 5 s, or any number of
viewers, cost at most one carrier read per eSIM and period in each API process (viewers
on several API processes at once share one run of the workflow). An error is an answer
too, kept as long and shown beside our lines: the carrier unreadable, no worker
answering within ``WAIT_SECONDS``, Temporal unreachable.
"""

from __future__ import annotations

import asyncio
import time

from temporalio.client import Client, WorkflowFailureError
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.service import RPCError

from activities.carrier import CarrierLinesInput
from api.dashboard.esim import CarrierView
from api.errors import TEMPORAL_CONNECT_FAILED
from workflows.carrier_lines import RUN_LIMIT, CarrierLinesWorkflow, carrier_lines_id

# How long a page waits for a worker's answer before it shows the carrier as unread.
WAIT_SECONDS = 5.0
MAX_ERROR = 300


class CarrierLines:
    """Answers per ICCID, each kept ``keep_seconds``; one read at a time per ICCID."""

    def __init__(self, task_queue: str, keep_seconds: float) -> None:
        self._task_queue = task_queue
        self._keep = keep_seconds
        self._answers: dict[str, tuple[float, CarrierView]] = {}
        self._reading: dict[str, asyncio.Future[CarrierView]] = {}

    async def view(self, client: Client, carrier: str, iccid: str) -> CarrierView:
        """The carrier's lines on ``iccid``, or why they could not be read."""
        kept = self._answers.get(iccid)
        if kept is not None and time.monotonic() < kept[0]:
            return kept[1]
        reading = self._reading.get(iccid)
        if reading is None:
            reading = asyncio.ensure_future(self._read(client, carrier, iccid))
            self._reading[iccid] = reading
            reading.add_done_callback(lambda done: self._done(iccid, done))
        # A viewer who leaves does not cancel the read the others wait for.
        return await asyncio.shield(reading)

    def _done(self, iccid: str, done: asyncio.Future[CarrierView]) -> None:
        self._reading.pop(iccid, None)
        if done.cancelled() or done.exception() is not None:
            return
        now = time.monotonic()
        self._answers = {key: kept for key, kept in self._answers.items() if kept[0] > now}
        self._answers[iccid] = (now + self._keep, done.result())

    async def _read(self, client: Client, carrier: str, iccid: str) -> CarrierView:
        try:
            handle = await client.start_workflow(
                CarrierLinesWorkflow.run,
                CarrierLinesInput(carrier=carrier, iccid=iccid),
                id=carrier_lines_id(iccid),
                task_queue=self._task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
                execution_timeout=RUN_LIMIT,
            )
            result = await asyncio.wait_for(handle.result(), WAIT_SECONDS)
        except TimeoutError:
            return CarrierView(error=f"no worker answered within {WAIT_SECONDS:g} s")
        except WorkflowFailureError as error:
            return CarrierView(error=f"the read did not complete: {error.cause}"[:MAX_ERROR])
        except RPCError:
            return CarrierView(error="Temporal is unreachable")
        except RuntimeError as error:
            if not str(error).startswith(TEMPORAL_CONNECT_FAILED):
                raise
            return CarrierView(error="Temporal is unreachable")
        if result.error is not None:
            return CarrierView(error=result.error[:MAX_ERROR])
        return CarrierView(result.lines)
