"""The ledger as an outbox: which events are notified, and the cursor that reads them.

The ledger (``line_event``) is the outbox. A rotation writes its events in its own
transaction and never waits for a receiver; the dispatcher (``services.notify``) reads
the notifiable events after the cursor (``notification_cursor``) in id order. The cursor
moves past an event only after it was delivered or dropped. Several worker processes
share one cursor row; the one holding its lease (an atomic conditional ``UPDATE``)
delivers, the others wait for the lease to lapse.

The cursor is created at the ledger's end the first time a dispatcher runs with a URL:
turning notifications on does not replay history. With the URL set but no secret, the
dispatcher does not start and the cursor stays where it is.

On PostgreSQL, ids come from a sequence and a transaction may commit a smaller id after a
larger one is visible; a cursor past the larger would lose the smaller. So ledger writers
hold a shared advisory lock until they commit (``hold_ledger_writes``) and the dispatcher
reads the ledger only up to the highest id it saw while holding that lock exclusively
(``ledger_horizon``): below it nothing is in flight. SQLite has one writer at a time and
needs neither.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel
from sqlmodel import Session, col, select

from models.db import dialect_insert, session_scope
from models.tables import Balance, LineEvent, NotificationCursor

# Ledger kind -> notification type. ``cancelled`` with no line is the balance's end.
TYPES = {
    "activated": "line.activated",
    "expired": "line.ended",
    "exhausted": "line.ended",
    "cancelled": "line.ended",
    "failing": "balance.failing",
    "usage_threshold": "usage.threshold",
    "cap_reached": "balance.cap_reached",
    "cap_lifted": "balance.cap_lifted",
    "recovered": "balance.recovered",
    # What the audit found (services.audit_rules.Kind), one event per finding first seen.
    **{
        f"audit_{kind}": "audit.finding"
        for kind in (
            "missing_workflow",
            "ghost_line",
            "orphan_purchase",
            "two_active_lines",
            "missing_scheduled_line",
            "stuck_scheduled",
            "unpriced_purchase",
            "price_mismatch",
        )
    },
}
LINE_ENDED = frozenset({"expired", "exhausted", "cancelled"})
CURSOR = "webhook"
# Any constant: the key of the PostgreSQL advisory lock between ledger writers (shared)
# and the dispatcher's horizon read (exclusive).
LEDGER_LOCK_KEY = 0x6C_65_64_67  # "ledg"


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


def pending(session: Session, scan: int | None = None) -> int:
    """Notifiable events after the cursor (0 if notifications never ran): the backlog.

    With ``scan``, only the first ``scan`` events after the cursor are looked at, in id
    order on the primary key, so the read costs the same however far behind it is.
    """
    cursor = session.get(NotificationCursor, CURSOR)
    if cursor is None:
        return 0
    after = sa.select(col(LineEvent.kind), col(LineEvent.seq)).where(
        col(LineEvent.id) > cursor.last_event_id
    )
    if scan is not None:
        after = after.order_by(col(LineEvent.id)).limit(scan)
    events = after.subquery()
    query = (
        sa.select(sa.func.count())
        .select_from(events)
        .where(events.c.kind.in_(TYPES))
        .where(sa.or_(events.c.kind.not_in(LINE_ENDED), events.c.seq.is_not(None)))
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
