"""Pacing by eSIM Go's own rate-limit headers, as an httpx transport.

eSIM Go limits each IP address in fixed one-second windows of tokens, and every answer
says where the window stands (CARRIERS.md 3.1): ``X-Ratelimit-Limit`` (tokens in the
window), ``X-Ratelimit-Remaining`` (left after this request), ``X-Ratelimit-Reset`` (ISO
8601: when the window resets) and ``X-Ratelimit-Cost`` (what this request cost). What
each endpoint costs is not public, so the client does not guess it: once an answer says
no token is left, nothing more is sent until the window resets; a 429 holds every
request for its ``Retry-After``. This comes on top of the configured per-second limit
(:mod:`carriers.ratelimit`), which spaces requests but cannot know an endpoint costs 5.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx

from carriers.errors import retry_after_seconds
from carriers.ratelimit import check_send_by

LIMIT, REMAINING, RESET, COST = (
    "X-Ratelimit-Limit",
    "X-Ratelimit-Remaining",
    "X-Ratelimit-Reset",
    "X-Ratelimit-Cost",
)
# A window is one second: a Reset further away than this is a clock apart from ours,
# and waiting for it would idle the client for nothing.
WINDOW = timedelta(seconds=1)
# The longest a 429's Retry-After holds every request (eSIM Go sends 1).
MAX_HOLD = timedelta(seconds=30)


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class RateWindow:
    """The rate-limit headers of one answer; a header missing or unreadable is None."""

    limit: int | None
    remaining: int | None
    reset: datetime | None
    cost: int | None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> RateWindow:
        return cls(
            limit=_count(headers.get(LIMIT)),
            remaining=_count(headers.get(REMAINING)),
            reset=reset_time(headers.get(RESET)),
            cost=_count(headers.get(COST)),
        )

    @property
    def complete(self) -> bool:
        return None not in (self.limit, self.remaining, self.reset, self.cost)


class WindowPacer:
    """Holds requests back while eSIM Go's window is spent, as its answers report it.

    ``observe`` reads each answer; ``delay`` says how long the next request must wait.
    Pure but for ``clock`` and ``sleep``, which tests replace."""

    def __init__(
        self,
        clock: Callable[[], datetime] = now_utc,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._clock = clock
        self._sleep = sleep
        self._until: datetime | None = None
        self.last: RateWindow | None = None

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Take in one answer: its window's headers, and a 429's ``Retry-After``."""
        now = self._clock()
        window = RateWindow.of(headers)
        self.last = window
        if window.remaining is not None and window.remaining <= 0:
            until = window.reset if window.reset is not None else now + WINDOW
            self._hold(min(max(until, now), now + WINDOW))
        if status == 429:
            seconds = retry_after_seconds(headers.get("Retry-After"))
            hold = timedelta(seconds=seconds) if seconds is not None else WINDOW
            self._hold(now + min(hold, MAX_HOLD))

    def delay(self) -> float:
        """Seconds the next request waits (0: it may go now)."""
        if self._until is None:
            return 0.0
        return max(0.0, (self._until - self._clock()).total_seconds())

    async def wait(self) -> None:
        seconds = self.delay()
        if seconds > 0:
            await self._sleep(seconds)

    def _hold(self, until: datetime) -> None:
        if self._until is None or until > self._until:
            self._until = until


class PacedTransport(httpx.AsyncBaseTransport):
    """Waits for the pacer before each request, and shows it each answer."""

    def __init__(self, inner: httpx.AsyncBaseTransport, pacer: WindowPacer) -> None:
        self._inner = inner
        self.pacer = pacer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await self.pacer.wait()
        check_send_by(request)
        response = await self._inner.handle_async_request(request)
        self.pacer.observe(response.status_code, response.headers)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def reset_time(value: str | None) -> datetime | None:
    """An ``X-Ratelimit-Reset`` (ISO 8601; without an offset, UTC); None if unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _count(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
