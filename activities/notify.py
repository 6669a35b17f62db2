"""Outbound notifications: signed webhooks for what an MVNO's own systems react to.

The ledger (``line_event``) is the outbox. A rotation writes its events in its own
transaction and never waits for a receiver; this dispatcher, a background task of every
worker process (``worker.py``), reads the notifiable events after the cursor
(``notification_cursor``) in id order and posts each to ``NOTIFY_URL``:

    POST {"id", "type", "balance_id", "iccid", "seq", "at", "detail"}
    Esim-Event-Id: <id>
    Esim-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "{t}.{raw body}">

Types: ``line.activated``, ``line.ended`` (``detail.state``: expired, exhausted,
cancelled), ``balance.failing``, ``usage.threshold``, ``balance.cap_reached``.
A non-2xx answer or no answer is retried with exponential backoff (1 s doubling to
5 min) up to ``NOTIFY_MAX_ATTEMPTS`` deliveries; then the notification is dropped
(``esim_notifications_total{outcome="dropped"}`` and one log line) and the next one goes.

Delivery is at-least-once and in ledger order, so in order per balance: the cursor moves
past an event only after it was delivered or dropped, so a process that dies between the
two delivers it again. Several worker processes share one cursor row; the one holding its
lease (an atomic conditional ``UPDATE``) delivers, the others wait for the lease to lapse.

The cursor is created at the ledger's end the first time a dispatcher runs with a URL:
turning notifications on does not replay history. With the URL set but no secret, the
dispatcher does not start (one log line) and the cursor stays where it is.

On PostgreSQL, ids come from a sequence and a transaction may commit a smaller id after a
larger one is visible; a cursor past the larger would lose the smaller. So ledger writers
hold a shared advisory lock until they commit (``hold_ledger_writes``) and the dispatcher
reads the ledger only up to the highest id it saw while holding that lock exclusively
(``ledger_horizon``): below it nothing is in flight. SQLite has one writer at a time and
needs neither.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from activities.metrics import notifications
from config import Settings
from models.db import dialect_insert, session_scope
from models.signature import sign
from models.tables import Balance, LineEvent, NotificationCursor

log = logging.getLogger("notify")

# Ledger kind -> notification type. ``cancelled`` with no line is the balance's end.
TYPES = {
    "activated": "line.activated",
    "expired": "line.ended",
    "exhausted": "line.ended",
    "cancelled": "line.ended",
    "failing": "balance.failing",
    "usage_threshold": "usage.threshold",
    "cap_reached": "balance.cap_reached",
}
LINE_ENDED = frozenset({"expired", "exhausted", "cancelled"})
CURSOR = "webhook"
# Any constant: the key of the PostgreSQL advisory lock between ledger writers (shared)
# and the dispatcher's horizon read (exclusive).
LEDGER_LOCK_KEY = 0x6C_65_64_67  # "ledg"
USER_AGENT = "esim-balance-notify/1"


class Notification(BaseModel):
    """The body of one notification; ``id`` is stable across redeliveries (dedupe on it)."""

    id: str
    type: str
    balance_id: str
    iccid: str
    seq: int | None
    at: datetime
    detail: dict[str, Any]


def notification_type(kind: str, seq: int | None) -> str | None:
    """The notification type of a ledger event, or None if it is not notified."""
    if kind in LINE_ENDED and seq is None:
        return None
    return TYPES.get(kind)


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


# --- the ledger as an outbox ------------------------------------------------------------


def hold_ledger_writes(session: Session) -> None:
    """Called by a ledger writer first in its transaction, before it takes any row lock
    (else two writers of one balance and the dispatcher could wait on each other);
    held until the transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(
            sa.text("SELECT pg_advisory_xact_lock_shared(:key)"), {"key": LEDGER_LOCK_KEY}
        )


def ledger_horizon(session: Session) -> int:
    """The highest ledger id below which no write is still in flight."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": LEDGER_LOCK_KEY})
    return int(
        session.execute(sa.select(sa.func.coalesce(sa.func.max(col(LineEvent.id)), 0))).scalar_one()
    )


def pending(session: Session) -> int:
    """Notifiable events after the cursor (0 if notifications never ran): the backlog."""
    cursor = session.get(NotificationCursor, CURSOR)
    if cursor is None:
        return 0
    query = (
        sa.select(sa.func.count())
        .select_from(LineEvent)
        .where(col(LineEvent.id) > cursor.last_event_id, col(LineEvent.kind).in_(TYPES))
        .where(sa.or_(col(LineEvent.kind).not_in(LINE_ENDED), col(LineEvent.seq).is_not(None)))
    )
    return int(session.execute(query).scalar_one())


@dataclass
class Batch:
    """Notifiable events after the cursor, and how far the read went (``scanned_to``)."""

    notes: list[tuple[int, Notification]]
    scanned_to: int


class Cursor:
    """The shared cursor row, leased by one dispatcher at a time (synchronous: run in a
    thread)."""

    def __init__(self, database_url: str, owner: str, lease_seconds: float) -> None:
        self.url = database_url
        self.owner = owner
        self.lease = timedelta(seconds=lease_seconds)

    def claim(self) -> int | None:
        """Take or renew the lease; the cursor position if this dispatcher holds it."""
        now = datetime.now(UTC)
        with session_scope(self.url) as session:
            if session.get(NotificationCursor, CURSOR) is None:
                start = {
                    "name": CURSOR,
                    "last_event_id": ledger_horizon(session),
                    "updated_at": now,
                }
                session.execute(
                    dialect_insert(session, NotificationCursor)
                    .values(start)
                    .on_conflict_do_nothing()
                )
            free = sa.or_(
                col(NotificationCursor.owner).is_(None),
                col(NotificationCursor.owner) == self.owner,
                col(NotificationCursor.lease_until) < now,
            )
            if not self._update(session, free, {}):
                return None
            row = session.get(NotificationCursor, CURSOR)
            assert row is not None
            return row.last_event_id

    def renew(self, last_event_id: int | None = None) -> bool:
        """Extend the lease (and move the cursor); False if another dispatcher took it."""
        values = {} if last_event_id is None else {"last_event_id": last_event_id}
        with session_scope(self.url) as session:
            return self._update(session, col(NotificationCursor.owner) == self.owner, values)

    def release(self) -> None:
        with session_scope(self.url) as session:
            session.execute(
                sa.update(NotificationCursor)
                .where(
                    col(NotificationCursor.name) == CURSOR,
                    col(NotificationCursor.owner) == self.owner,
                )
                .values(owner=None, lease_until=None)
            )

    def _update(self, session: Session, condition: Any, values: dict[str, Any]) -> bool:
        now = datetime.now(UTC)
        result = session.execute(
            sa.update(NotificationCursor)
            .where(col(NotificationCursor.name) == CURSOR, condition)
            .values(owner=self.owner, lease_until=now + self.lease, updated_at=now, **values)
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def read(self, after: int, limit: int) -> Batch:
        """Up to ``limit`` notifiable events after ``after``, in id order."""
        with session_scope(self.url) as session:
            horizon = ledger_horizon(session)
        with session_scope(self.url) as session:
            rows = session.exec(
                select(LineEvent, Balance.iccid)
                .join(Balance, col(Balance.id) == col(LineEvent.balance_id), isouter=True)
                .where(col(LineEvent.id) > after, col(LineEvent.id) <= horizon)
                .where(col(LineEvent.kind).in_(TYPES))
                .order_by(col(LineEvent.id))
                .limit(limit)
            ).all()
        notes: list[tuple[int, Notification]] = []
        for event, iccid in rows:
            kind = notification_type(event.kind, event.seq)
            assert event.id is not None
            if kind is None:
                continue
            detail = {**event.detail, "state": event.kind} if kind == "line.ended" else event.detail
            note = Notification(
                id=event.key,
                type=kind,
                balance_id=event.balance_id,
                iccid=iccid or "",
                seq=event.seq,
                at=event.at,
                detail=detail,
            )
            notes.append((event.id, note))
        last = rows[-1][0].id if rows else None
        scanned_to = horizon if len(rows) < limit or last is None else last
        return Batch(notes, max(after, scanned_to))


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
