"""A per-process request rate limit for one carrier, as an httpx transport.

Carriers answer 429 above their rate limit. At a midnight herd thousands of balances
order their next lines in the same lead window; without a limit a worker would send them
as fast as it can and spend the window on 429s and backoff. The limit spaces requests
``1 / rate`` seconds apart, and no second ever holds more than ``rate`` requests,
whatever the burst behind it: the others wait their turn.

The limit is per client, i.e. per worker process: with N worker processes on one task
queue the carrier sees up to N times the setting, so set it to the carrier's limit
divided by the number of worker processes.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from contextvars import ContextVar
from datetime import UTC, datetime

import httpx

# A request sent in this context must leave by this time (UTC), or not at all: an
# order may only go while its claim lasts (models/claims.py). Checked after the wait
# for the request's turn, which at a busy carrier can be long.
SEND_BY: ContextVar[datetime | None] = ContextVar("SEND_BY", default=None)

# The log's second, with a margin: requests let go a second apart can arrive at the
# carrier closer together than that, and count in the same second of its own limit.
WINDOW_SECONDS = 1.05


class RequestSpacer:
    """Lets requests go ``1 / rate`` seconds apart, and never more than ``rate`` of them
    in any one second.

    Each request takes the next free slot when it arrives and sleeps until it; then a
    log of the last second's requests holds it back should the second be full. There is
    no lock: taking a slot and checking the log are each one step of the event loop, so
    when a busy loop wakes the sleepers late, every request whose slot has passed goes
    in that same pass, up to the second's limit. (A lock handed from one waiter to the
    next let through one request per pass of the loop: 49 a second of 200 with the loop
    20 ms busy per pass, ``python -m bench.limiter``, while thousands of balances waited.)
    """

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("rate limit must be positive")
        self.interval = 1.0 / per_second
        self.per_window = max(1, math.floor(per_second))
        self._next = 0.0
        self._sent: deque[float] = deque()

    async def wait(self) -> None:
        now = time.monotonic()
        slot = max(self._next, now)
        self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)
        while True:
            now = time.monotonic()
            while self._sent and self._sent[0] <= now - WINDOW_SECONDS:
                self._sent.popleft()
            if len(self._sent) < self.per_window:
                self._sent.append(now)
                return
            await asyncio.sleep(self._sent[0] + WINDOW_SECONDS - now)


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """Waits for the spacer before every request, then sends it through ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, per_second: float) -> None:
        self._inner = inner
        self._spacer = RequestSpacer(per_second)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._spacer.wait()
        check_send_by(request)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def check_send_by(request: httpx.Request) -> None:
    """Raise, sending nothing, if ``request`` is too late to leave (``SEND_BY``)."""
    send_by = SEND_BY.get()
    if send_by is not None and datetime.now(UTC) > send_by:
        # A pool timeout: the clients map it to CarrierUnavailable, "nothing was sent".
        raise httpx.PoolTimeout(f"not sent: it had to leave by {send_by:%H:%M:%S}", request=request)


# An idle connection is closed by us before a carrier's server may close it: a request
# sent on a connection the server is closing fails with no answer, and an order's
# outcome is then unknown (held for the carrier's in-doubt window). Servers keep idle
# connections for 5 s (uvicorn) to 60 s and more; ours go after 2 s.
KEEPALIVE_SECONDS = 2.0


def pooled() -> httpx.AsyncHTTPTransport:
    """httpx's transport, with idle connections let go of before any server's."""
    return httpx.AsyncHTTPTransport(limits=httpx.Limits(keepalive_expiry=KEEPALIVE_SECONDS))


def limited(
    transport: httpx.AsyncBaseTransport | None, per_second: float
) -> httpx.AsyncBaseTransport:
    """``transport`` (``pooled()`` when None) limited to ``per_second``; 0 is no limit."""
    if per_second < 0:
        raise ValueError(f"rate limit must be 0 (none) or positive, not {per_second}")
    transport = transport or pooled()
    if per_second == 0:
        return transport
    return RateLimitedTransport(transport, per_second)
