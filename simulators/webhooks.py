"""Webhook delivery from a background queue: late, retried, sometimes twice.

A message is made once (body and headers) and every copy of it is the same bytes: a
retry or a duplicate carries the same message id, as SNS's do. Delivery never blocks the
engine: :meth:`WebhookDispatcher.submit` only enqueues, a few worker tasks post with
retries (0.5 s doubling to 10 s, eight attempts: a receiver restarting for half a minute
loses nothing), and what still fails is logged and dropped. With a ``delay_seconds`` each
copy waits a random time up to it first, so later events can overtake earlier ones, as a
real carrier's webhooks do.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass

import httpx

logger = logging.getLogger(__name__)

MAX_QUEUED = 10_000


@dataclass
class WebhookTarget:
    """Where events go (None: nowhere), the fraction of events delivered twice and the
    longest random delay of one delivery (0: in order)."""

    url: str | None = None
    duplicate_rate: float = 0.0
    delay_seconds: float = 0.0


@dataclass(frozen=True)
class Message:
    """One message as it goes out, the same bytes on every attempt."""

    url: str
    body: bytes
    headers: dict[str, str]


class WebhookDispatcher:
    """Posts messages, each to the endpoint it was made for, until one answers 2xx."""

    def __init__(
        self,
        target: WebhookTarget,
        *,
        seed: int | None = None,
        attempts: int = 8,
        backoff_seconds: float = 0.5,
        max_backoff_seconds: float = 10.0,
        timeout_seconds: float = 5.0,
        workers: int = 4,
    ) -> None:
        self.target = target
        self.attempts = attempts
        self.backoff_seconds = backoff_seconds
        self.max_backoff_seconds = max_backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.delivered = 0
        self.failed = 0
        self.duplicated = 0
        self.delayed = 0
        self._workers = workers
        self._rng = random.Random(seed)
        self._queue: asyncio.Queue[Message] = asyncio.Queue(MAX_QUEUED)
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None

    def submit(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        """Queues one message for ``url``, twice or late as the target says."""
        message = Message(url, body, headers)
        copies = 2 if self._rng.random() < self.target.duplicate_rate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            delay = self._rng.uniform(0, self.target.delay_seconds)
            if delay > 0:
                self.delayed += 1
                asyncio.get_running_loop().call_later(delay, self._enqueue, message)
            else:
                self._enqueue(message)

    def _enqueue(self, message: Message) -> None:
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            logger.warning("webhook queue full, dropping a message for %s", message.url)

    def counts(self) -> dict[str, int]:
        """Deliveries so far: posted, given up, sent twice, held back by the delay."""
        return {
            "delivered": self.delivered,
            "failed": self.failed,
            "duplicated": self.duplicated,
            "delayed": self.delayed,
        }

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout_seconds)
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if not self._queue.empty():
            logger.warning("%d webhook deliveries left undelivered", self._queue.qsize())

    async def _work(self) -> None:
        while True:
            message = await self._queue.get()
            try:
                await self._deliver(message)
            finally:
                self._queue.task_done()

    async def _deliver(self, message: Message) -> None:
        assert self._client is not None
        url = message.url
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._client.post(
                    url, content=message.body, headers=message.headers
                )
                if response.is_success:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = repr(exc)
            if attempt < self.attempts:
                backoff = self.backoff_seconds * 2 ** (attempt - 1)
                await asyncio.sleep(min(backoff, self.max_backoff_seconds))
        self.failed += 1
        logger.warning("webhook to %s failed after %d attempts: %s", url, self.attempts, problem)
