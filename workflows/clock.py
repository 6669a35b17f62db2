"""The workflow's clock and its timers: one Temporal timer per moment, shared.

A rotation sleeps until its switch, and the switch is also the moment an order still
retrying shows the balance Failing. Were each wait its own ``wait_condition(timeout=...)``,
a rotation's history would hold two timers where one does (started, cancelled, started,
fired), and every message that wakes a sleeping balance would cancel its timer and start
the same one again. So a moment's timer is started once and whoever waits for that
moment shares it: the 25 history events of a rotation (BENCHMARKS.md) count on it.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow

# A clock this far behind a timer it has seen fire is stale, not rounded (see now).
STALE_CLOCK = timedelta(milliseconds=10)


class Clock:
    def __init__(self) -> None:
        self._timers: dict[datetime, asyncio.Future[None]] = {}
        # The latest moment a fired timer proves has passed (see now).
        self._floor: datetime | None = None

    def now(self) -> datetime:
        """The workflow's time, never earlier than a timer it has seen fire.

        A worker handed this run after another worker died has woken it with the clock
        of the run's first workflow task (seen with temporalio 1.35; most likely it had
        built the run to answer a query while the other worker held that task). A timer
        that fired proves its moment has passed: woken by the order timer, the run
        orders, as any replay of it, which reads the true clock, will. A clock read a
        hair before a timer's moment (rounding) is taken as it was, so recorded runs
        replay as they ran."""
        now = workflow.now()
        if self._floor is not None and self._floor - now > STALE_CLOCK:
            return self._floor
        return now

    def timer(self, at: datetime, summary: str) -> asyncio.Future[None]:
        """The timer that fires at ``at``, started if no one waits for it yet. A moment
        already past is a future already done (no timer)."""
        timer = self._timers.get(at)
        if timer is not None and not timer.done():
            return timer
        # A timer that has fired is not reused: the workflow's clock can read a hair
        # before ``at`` when it fires (times are rounded on the way), and a fired timer
        # taken again would wake the loop at once, with nothing due, for ever.
        delay = at - self.now()
        if delay <= timedelta(0):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        timer = asyncio.ensure_future(self._fire(at, delay, summary))
        self._timers[at] = timer
        return timer

    def keep_only(self, at: datetime) -> None:
        """Cancel every timer but ``at``'s: their moments have moved."""
        for other, pending in list(self._timers.items()):
            if other != at:
                pending.cancel()
                del self._timers[other]

    def drop(self, at: datetime) -> None:
        """Cancel ``at``'s timer: no one waits for it any more."""
        timer = self._timers.pop(at, None)
        if timer is not None:
            timer.cancel()

    async def _fire(self, at: datetime, delay: timedelta, summary: str) -> None:
        await workflow.sleep(delay, summary=summary)
        self._floor = max(self._floor or at, at)
