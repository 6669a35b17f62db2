"""eSIM Go's rate limit (record 3.1): per client IP, a fixed one-second window of tokens.

Every response of the API carries ``X-Ratelimit-Limit``, ``-Remaining`` (after this
request), ``-Reset`` (ISO 8601, the window's end) and ``-Cost``; a request costing more
than is left answers 429 ``{"message": "Rate limit exceeded"}`` with ``Retry-After: 1``
and is not applied. Windows are whole epoch seconds. The control API is exempt.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from simulators.esimgo_account import AccountConfig

# Tokens per call [NOT PUBLIC]: reads cost 1, calls that buy, apply or revoke cost 2.
TOKEN_COSTS: tuple[tuple[str, str, int], ...] = (
    ("POST", r"/orders", 2),
    ("POST", r"/esims/apply", 2),
    ("POST", r"/inventory/refund", 2),
    ("DELETE", r"/esims/[^/]+/bundles/.+", 2),
)
DEFAULT_COST = 1
_VERSION = re.compile(r"^/v\d+\.\d+")


def token_cost(method: str, path: str) -> int:
    bare = _VERSION.sub("", path)
    for m, pattern, cost in TOKEN_COSTS:
        if m == method and re.fullmatch(pattern, bare):
            return cost
    return DEFAULT_COST


class RateLimitMiddleware:
    """Counts tokens per client IP in the current second; ``config.rate_limit_tokens``
    None turns the limit (and its headers) off."""

    def __init__(
        self,
        app: ASGIApp,
        config: AccountConfig,
        exempt_prefix: str = "/_sim",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.config = config
        self.exempt_prefix = exempt_prefix
        self.clock = clock
        self._window = 0
        self._used: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.config.rate_limit_tokens
        if scope["type"] != "http" or scope["path"].startswith(self.exempt_prefix) or not limit:
            await self.app(scope, receive, send)
            return
        window = math.floor(self.clock())
        if window != self._window:
            self._window, self._used = window, {}
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        cost = token_cost(scope["method"], scope["path"])
        used = self._used.get(ip, 0)
        allowed = used + cost <= limit
        if allowed:
            used = self._used[ip] = used + cost
        reset = datetime.fromtimestamp(window + 1, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        headers = [
            (b"x-ratelimit-limit", str(limit).encode()),
            (b"x-ratelimit-remaining", str(max(0, limit - used)).encode()),
            (b"x-ratelimit-reset", reset.encode()),
            (b"x-ratelimit-cost", str(cost).encode()),
        ]
        if not allowed:
            body = json.dumps({"message": "Rate limit exceeded"}).encode()
            head = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"1"),
            ]
            await send({"type": "http.response.start", "status": 429, "headers": head + headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + headers}
            await send(message)

        await self.app(scope, receive, stamped)
