"""A per-process request rate limit for one carrier, as an httpx transport.

Carriers answer 429 above their rate limit. At a midnight herd thousands of balances
order their next lines in the same lead window; without a limit a worker would send them
as fast as it can and spend the window on 429s and backoff. The limit spaces requests
``1 / rate`` seconds apart (a token bucket of one token), so no second ever holds more
than ``rate`` requests, whatever the burst behind it: the others wait their turn.

The limit is per client, i.e. per worker process: with N worker processes on one task
queue the carrier sees up to N times the setting, so set it to the carrier's limit
divided by the number of worker processes.
"""

from __future__ import annotations

import asyncio
import time

import httpx


class RequestSpacer:
    """Lets requests go one at a time, at least ``1 / rate`` seconds apart."""

    def __init__(self, per_second: float) -> None:
        if per_second <= 0:
            raise ValueError("rate limit must be positive")
        self.interval = 1.0 / per_second
        self._last = -self.interval
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        # Spaced from the moment the previous request was actually let go, not from its
        # planned slot: a busy event loop that wakes a sleeper late can then never let
        # two requests through closer together than the interval.
        async with self._lock:
            delay = self._last + self.interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self._last = time.monotonic()


class RateLimitedTransport(httpx.AsyncBaseTransport):
    """Waits for the spacer before every request, then sends it through ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, per_second: float) -> None:
        self._inner = inner
        self._spacer = RequestSpacer(per_second)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self._spacer.wait()
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def limited(
    transport: httpx.AsyncBaseTransport | None, per_second: float
) -> httpx.AsyncBaseTransport | None:
    """``transport`` (httpx's default when None) limited to ``per_second``; 0 is no limit."""
    if per_second < 0:
        raise ValueError(f"rate limit must be 0 (none) or positive, not {per_second}")
    if per_second == 0:
        return transport
    return RateLimitedTransport(transport or httpx.AsyncHTTPTransport(), per_second)
