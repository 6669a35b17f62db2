"""Fault injection for a simulated carrier's API, as pure ASGI middleware.

Applies to every HTTP request except those under the exempt prefix (the ``/_sim`` control
API). In order: added latency, outage (503), rate limit (429 + ``Retry-After``), random
errors (503, the request is not applied), a slow commit (a request that changes state
takes effect ``commit_delay_ms`` after it arrived, whether or not the client still
waits, and only then is answered; reads answer at once), lost responses (the request IS
applied, then its response is replaced by an empty 504, as a gateway that lost the
upstream answer). Error bodies are plain text, as a gateway in front of the carrier would
send them, unless the app passes a ``refusal`` that shapes them as its carrier does.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import NamedTuple

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class FaultSettings(BaseModel):
    """Body of ``POST /_sim/faults``: every field optional, ``{}`` clears all faults."""

    model_config = ConfigDict(extra="forbid")

    error_rate: float | None = Field(default=None, ge=0, le=1)
    outage_seconds: float | None = Field(default=None, ge=0)
    latency_ms: float | None = Field(default=None, ge=0)
    lose_responses: float | None = Field(default=None, ge=0, le=1)
    rate_limit_per_second: float | None = Field(default=None, gt=0)
    commit_delay_ms: float | None = Field(default=None, ge=0)


class Faults:
    """The faults in force and how many of each kind were injected."""

    def __init__(self, seed: int | None = None) -> None:
        self.settings = FaultSettings()
        self.injected: Counter[str] = Counter()
        self._outage_until = 0.0
        self._rng = random.Random(seed)
        self._recent: deque[float] = deque()

    def configure(self, settings: FaultSettings) -> None:
        """Replaces the faults in force; counters are kept (they are cumulative)."""
        self.settings = settings
        self._outage_until = time.monotonic() + (settings.outage_seconds or 0.0)
        self._recent.clear()

    def outage_remaining(self) -> float:
        return max(0.0, self._outage_until - time.monotonic())

    def rate_limited(self) -> float | None:
        """Seconds to wait if this request is over the limit, else None (and it counts)."""
        limit = self.settings.rate_limit_per_second
        if limit is None:
            return None
        now = time.monotonic()
        while self._recent and self._recent[0] <= now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= limit:
            return self._recent[0] + 1.0 - now
        self._recent.append(now)
        return None

    def chance(self, rate: float | None) -> bool:
        return rate is not None and self._rng.random() < rate

    def report(self) -> dict[str, object]:
        """What ``GET /_sim/faults`` shows: settings (outage as seconds left) and counters."""
        report: dict[str, object] = self.settings.model_dump()
        remaining = self.outage_remaining()
        report["outage_seconds"] = round(remaining, 3) if remaining > 0 else None
        kinds = ("latency", "outage", "rate_limit", "error", "commit_delay", "lost_response")
        report["injected"] = {kind: self.injected[kind] for kind in kinds}
        return report


class Refused(NamedTuple):
    """An injected refusal: status, plain reason, seconds to wait if the carrier says so."""

    status: int
    reason: str
    retry_after: int | None


# Body, content type and extra headers of a refusal, in a carrier's own shape.
Refusal = Callable[[Refused], tuple[bytes, bytes, list[tuple[bytes, bytes]]]]


def changes_state_by_method(scope: Scope) -> bool:
    """A REST API's writes: every method but GET and HEAD."""
    return scope["method"] not in ("GET", "HEAD")


class FaultInjectionMiddleware:
    """Wraps an ASGI app; ``faults`` is shared with the control API that configures it.
    ``changes_state`` tells the requests a slow commit delays from the reads; ``refusal``
    (None: plain text) shapes outages, errors and rate limits as the carrier answers them."""

    def __init__(
        self,
        app: ASGIApp,
        faults: Faults,
        exempt_prefix: str = "/_sim",
        changes_state: Callable[[Scope], bool] = changes_state_by_method,
        refusal: Refusal | None = None,
    ) -> None:
        self.app = app
        self.faults = faults
        self.exempt_prefix = exempt_prefix
        self.changes_state = changes_state
        self.refusal = refusal

    async def _refuse(self, send: Send, refused: Refused, text: bytes) -> None:
        if self.refusal is None:
            extra = []
            if refused.status == 429 and refused.retry_after is not None:
                extra = [(b"retry-after", str(refused.retry_after).encode())]
            await _reply(send, refused.status, text, extra)
            return
        body, content_type, headers = self.refusal(refused)
        await _reply(send, refused.status, body, headers, content_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefix):
            await self.app(scope, receive, send)
            return
        faults, settings = self.faults, self.faults.settings
        if settings.latency_ms:
            faults.injected["latency"] += 1
            # The carrier has the whole request before it is slow: a client that gives up
            # meanwhile does not stop it from taking effect.
            receive = await _buffered(receive)
            await asyncio.sleep(settings.latency_ms / 1000)
        if faults.outage_remaining() > 0:
            faults.injected["outage"] += 1
            seconds = max(1, math.ceil(faults.outage_remaining()))
            text = b"Service Unavailable (simulated outage)"
            await self._refuse(send, Refused(503, text.decode(), seconds), text)
            return
        wait = faults.rate_limited()
        if wait is not None:
            faults.injected["rate_limit"] += 1
            text = b"Too Many Requests"
            await self._refuse(send, Refused(429, text.decode(), max(1, math.ceil(wait))), text)
            return
        if faults.chance(settings.error_rate):
            faults.injected["error"] += 1
            text = b"Service Unavailable (simulated error)"
            await self._refuse(send, Refused(503, text.decode(), 1), text)
            return
        if settings.commit_delay_ms and self.changes_state(scope):
            faults.injected["commit_delay"] += 1
            # As with latency: the carrier has the request, and commits it in its own time.
            receive = await _buffered(receive)
            await asyncio.sleep(settings.commit_delay_ms / 1000)
        if faults.chance(settings.lose_responses):
            faults.injected["lost_response"] += 1
            await self.app(scope, receive, _discard)
            await _reply(send, 504, b"")
            return
        await self.app(scope, receive, send)


async def _buffered(receive: Receive) -> Receive:
    """Reads the whole request body now; returns a ``receive`` that replays it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return receive
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    replay: list[Message] = [{"type": "http.request", "body": b"".join(chunks)}]

    async def replayed() -> Message:
        return replay.pop() if replay else await receive()

    return replayed


async def _discard(message: Message) -> None:
    """Swallows the real response: the request took effect, its answer is lost."""


async def _reply(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]] | None = None,
    content_type: bytes = b"text/plain; charset=utf-8",
) -> None:
    head = [(b"content-length", str(len(body)).encode())]
    if body:
        head.append((b"content-type", content_type))
    await send({"type": "http.response.start", "status": status, "headers": head + (headers or [])})
    await send({"type": "http.response.body", "body": body})
