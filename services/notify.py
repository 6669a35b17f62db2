"""Outbound notifications: signed webhooks for what an MVNO's own systems react to.

The ledger (``line_event``) is the outbox. A rotation writes its events in its own
transaction and never waits for a receiver; this dispatcher, a background task of every
worker process (``worker.py``), reads the notifiable events after the cursor
(``notification_cursor``) in id order and posts each to ``NOTIFY_URL``:

    POST {"id", "type", "balance_id", "iccid", "seq", "at", "detail"}
    Esim-Event-Id: <id>
    Esim-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{raw body}">

Types: ``line.activated``, ``line.ended`` (``detail.state``: expired, exhausted,
cancelled), ``balance.failing``, ``balance.recovered``, ``usage.threshold``,
``balance.cap_reached``, ``balance.cap_lifted``, ``audit.finding``.
A non-2xx answer or no answer is retried with exponential backoff (1 s doubling to
5 min) up to ``NOTIFY_MAX_ATTEMPTS`` deliveries; then the notification is dropped
(``esim_notifications_total{outcome="dropped"}`` and one log line) and the next one goes.

Delivery is at-least-once and in ledger order, so in order per balance: the cursor
(``models.outbox``) moves past an event only after it was delivered or dropped, so a
process that dies between the two delivers it again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid

import httpx

from config import Settings
from models.outbox import Cursor, Notification
from models.signature import sign
from services.metrics import notifications

log = logging.getLogger("notify")

USER_AGENT = "esim-balance-notify/1"


def backoff(attempt: int, base: float = 1.0, cap: float = 300.0) -> float:
    """Seconds to wait after failed delivery number ``attempt`` (1, 2, ...)."""
    return float(min(cap, base * 2 ** (attempt - 1)))


def signed(
    secret: str, note: Notification, now: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of one delivery attempt, signed at ``now``."""
    body = note.model_dump_json().encode()
    timestamp = int(now if now is not None else time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Esim-Event-Id": note.id,
        "Esim-Signature": sign(secret, body, timestamp),
    }
    return body, headers


# --- the dispatcher ------------------------------------------------------------------------


class Dispatcher:
    """Posts notifiable ledger events to ``url``, signed with ``secret``, in order."""

    def __init__(
        self,
        database_url: str,
        url: str,
        secret: str,
        max_attempts: int = 10,
        *,
        poll_seconds: float = 1.0,
        lease_seconds: float = 30.0,
        backoff_base: float = 1.0,
        backoff_cap: float = 300.0,
        timeout: float = 10.0,
        batch: int = 100,
    ) -> None:
        owner = f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.cursor = Cursor(database_url, owner, lease_seconds)
        self.url = url
        self.secret = secret
        self.max_attempts = max(1, max_attempts)
        self.poll = poll_seconds
        self.lease_seconds = lease_seconds
        self.backoff_base, self.backoff_cap = backoff_base, backoff_cap
        self.timeout = timeout
        self.batch = batch
        self._stop = asyncio.Event()

    @classmethod
    def from_settings(cls, settings: Settings) -> Dispatcher | None:
        """The dispatcher ``settings`` ask for; None if notifications are off."""
        if not settings.notify_url:
            return None
        secret = settings.notify_secret.get_secret_value()
        if not secret:
            log.error("NOTIFY_URL is set but NOTIFY_SECRET is empty: notifications are off")
            return None
        return cls(settings.database_url, settings.notify_url, secret, settings.notify_max_attempts)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Deliver until ``stop`` is set; a failing database is logged and retried."""
        self._stop = stop or asyncio.Event()
        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as http:
            while not self._stop.is_set():
                try:
                    busy = await self.step(http)
                except Exception as error:  # noqa: BLE001  (keep going: the worker must not die)
                    log.warning("notification dispatch failed, retrying: %s", error)
                    busy = False
                if not busy:
                    await self._sleep(self.poll)
        await asyncio.to_thread(self.cursor.release)

    async def step(self, http: httpx.AsyncClient) -> bool:
        """One batch if this dispatcher holds the lease; True if it moved the cursor."""
        after = await asyncio.to_thread(self.cursor.claim)
        if after is None:
            return False
        batch = await asyncio.to_thread(self.cursor.read, after, self.batch)
        for event_id, note in batch.notes:
            if not await self._deliver(http, note):
                return False
            if not await asyncio.to_thread(self.cursor.renew, event_id):
                return False
        if batch.scanned_to == after:
            return False
        return await asyncio.to_thread(self.cursor.renew, batch.scanned_to)

    async def _deliver(self, http: httpx.AsyncClient, note: Notification) -> bool:
        """Post ``note`` until it is taken or given up; False if stopping or the lease
        was lost (then the cursor stays before it)."""
        why = ""
        for attempt in range(1, self.max_attempts + 1):
            why = await self._post(http, note)
            if not why:
                notifications.labels("delivered").inc()
                return True
            if attempt == self.max_attempts:
                break
            notifications.labels("retried").inc()
            if not await self._sleep(backoff(attempt, self.backoff_base, self.backoff_cap)):
                return False
        notifications.labels("dropped").inc()
        log.warning(
            "notification %s (%s) dropped after %d attempts: %s",
            note.id,
            note.type,
            self.max_attempts,
            why,
        )
        return True

    async def _post(self, http: httpx.AsyncClient, note: Notification) -> str:
        """One attempt; an empty string if the receiver took it, else why not."""
        body, headers = signed(self.secret, note)
        try:
            response = await http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as error:
            return f"{type(error).__name__}: {error}"
        if 200 <= response.status_code < 300:
            return ""
        return f"HTTP {response.status_code}"

    async def _sleep(self, seconds: float) -> bool:
        """Wait, renewing the lease meanwhile; False if stopping or the lease was lost."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=min(left, self.lease_seconds / 3))
            except TimeoutError:
                pass
            if self._stop.is_set():
                return False
            if deadline - time.monotonic() > 0 and not await asyncio.to_thread(self.cursor.renew):
                return False
        return not self._stop.is_set()
