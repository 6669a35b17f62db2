"""Store activities: write what a workflow step changed into the product database.

Writes are idempotent and race-free: lines are upserted by (balance, seq) and ledger
events inserted by their workflow-chosen key, both with ``INSERT ... ON CONFLICT`` (SQLite
and PostgreSQL alike), and the balance row is overwritten with the workflow's latest view.
So a retried attempt, even one racing its own first attempt from another worker, leaves
the same rows behind and never a second row for one line or event.

Writes never go back: each workflow write carries the workflow's revision, and the
balance row and a line row take it only if theirs is not newer. A worker that stalls in
the middle of a write (GC pause, SIGSTOP, overload) loses its workflow task; another
worker replays the workflow and writes on; when the stalled one wakes, its write is
older than the rows and changes nothing. Ledger events are insert-once by key.
These are synchronous (SQLAlchemy sessions) and run in the worker's thread pool.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session
from temporalio import activity

from models.db import dialect_insert, dialect_insert_for, session_scope
from models.outbox import hold_ledger_writes
from models.payloads import BalanceRecord, BalanceStatus, EventRecord, Line, RecordChanges
from models.tables import Balance, BalanceLine, Esim, LineEvent, UTCDateTime
from services.metrics import observe_refunds, observe_rotations, observe_spend

# Written as Core statements on the tables, not through the ORM: the rotation's one write
# is on every balance's path at a boundary, and the ORM's bulk paths cost the worker
# several times the SQL's own time there (BENCHMARKS.md).
BALANCES: sa.Table = Balance.__table__  # type: ignore[attr-defined]
LINES: sa.Table = BalanceLine.__table__  # type: ignore[attr-defined]
LEDGER: sa.Table = LineEvent.__table__  # type: ignore[attr-defined]


def line_row(changes: RecordChanges, line: Line, now: datetime) -> dict[str, Any]:
    """A line as its row: the one place the mapping is written."""
    return {
        "balance_id": changes.balance_id,
        "seq": line.seq,
        "iccid": changes.iccid,
        "carrier": changes.carrier,
        "reference": line.reference,
        "carrier_line_id": line.line_id,
        "product_id": line.product_id,
        "state": line.state.value,
        "allowance_bytes": line.allowance_bytes,
        "used_bytes": line.used_bytes,
        "ordered_at": line.ordered_at,
        "activated_at": line.activated_at,
        "ends_at": line.ends_at,
        "ended_at": line.ended_at,
        "exhausted_at": line.exhausted_at,
        "revision": changes.balance.revision if changes.balance else 0,
        "updated_at": now,
    }


def price_row(changes: RecordChanges, line: Line) -> dict[str, Any]:
    """What buying a line cost, as the bind parameters of its one write (_SET_PRICE)."""
    return {
        "p_balance_id": changes.balance_id,
        "p_seq": line.seq,
        "p_price_cents": line.price_cents,
        "p_currency": line.currency,
    }


def balance_row(record: BalanceRecord, now: datetime) -> dict[str, Any]:
    """The workflow's view of a balance as the columns it writes: the one place."""
    return {
        "state": record.status.value,
        "product_id": record.product_id,
        "next_product_id": record.next_product_id,
        "line_seq": record.line_seq,
        "line_ends_at": record.line_ends_at,
        "rotations": record.rotations,
        "paused": record.paused,
        "capped": record.capped,
        "failing_reason": record.failing_reason,
        "revision": record.revision,
        "updated_at": now,
    }


# The columns each mapping writes, read off the mapping itself.
_A_LINE = Line(
    seq=0, reference="", product_id="", carrier_product_id="", allowance_bytes=1, validity_seconds=1
)
_A_BALANCE = BalanceRecord(balance_id="", status=BalanceStatus.Active, product_id="")
_ROW_OF_A_LINE = line_row(
    RecordChanges(balance_id="", iccid="", carrier=""), _A_LINE, datetime.now(UTC)
)
# What a later write of a line may change; the rest is fixed when the line is ordered.
LINE_UPDATES = [
    name
    for name in _ROW_OF_A_LINE
    if name not in {"balance_id", "seq", "iccid", "carrier", "reference", "revision"}
]
BALANCE_FIELDS = list(balance_row(_A_BALANCE, datetime.now(UTC)))


class StoreActivities:
    """Activities against the product database at ``database_url``."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    @activity.defn(name="record_changes")
    def record_changes(self, changes: RecordChanges) -> None:
        """Upsert the balance and its lines and append the ledger events, in one transaction.

        Rotation metrics count the events this attempt wrote first, after the commit, so
        a retried attempt (or one racing its first attempt) does not count them twice; so
        does the spend counter, the lines whose price this attempt wrote first.
        """
        fresh: list[EventRecord] = []
        bought: list[Line] = []
        refunded: list[tuple[int, str]] = []
        with session_scope(self._url) as session:
            if changes.events:
                # First, before any row lock: see hold_ledger_writes.
                hold_ledger_writes(session)
            if changes.balance is None or not _update_balance(
                session, changes.balance_id, changes.balance
            ):
                _adopt_balance(session, changes)
            if changes.lines:
                _upsert_lines(session, changes)
                bought = _record_prices(session, changes)
                refunded = _record_refunds(session, changes)
            if changes.events:
                fresh = _append_events(session, changes.events)
        observe_rotations(changes.carrier, fresh, changes.lines)
        observe_spend(changes.carrier, bought)
        observe_refunds(changes.carrier, refunded)
        activity.logger.debug(
            "recorded %d lines, %d events for %s",
            len(changes.lines),
            len(changes.events),
            changes.balance_id,
        )


def _append_events(session: Session, events: list[EventRecord]) -> list[EventRecord]:
    """Insert the events that are not in the ledger yet; return those this call wrote.

    The ledger is also the notification outbox: the caller holds ``hold_ledger_writes``,
    which keeps the dispatcher from reading past an id taken here but not committed.
    """
    # RETURNING, not rowcount: psycopg reports -1 for a single-row upsert.
    written = session.execute(
        _statements(session).append_events, [event.model_dump() for event in events]
    )
    keys = set(written.scalars())
    return [event for event in events if event.key in keys]


# The balance row's update, built once: a statement built per call coerces each value
# into a fresh bind parameter and computes its cache key anew, and at a boundary that was
# the largest single cost of the worker's event loop and threads (BENCHMARKS.md). Bind
# names are prefixed: a name equal to a column's is reserved for the SET clause.
_SET_BALANCE = {
    name: sa.bindparam(f"v_{name}", type_=BALANCES.c[name].type) for name in BALANCE_FIELDS
}
_THIS_BALANCE_NOT_NEWER = sa.and_(
    BALANCES.c.id == sa.bindparam("v_id", type_=BALANCES.c.id.type),
    BALANCES.c.revision <= _SET_BALANCE["revision"],
)
_UPDATE_BALANCE = (
    sa.update(BALANCES).where(_THIS_BALANCE_NOT_NEWER).values(_SET_BALANCE).returning(BALANCES.c.id)
)
_CLOSE_BALANCE = (
    sa.update(BALANCES)
    .where(_THIS_BALANCE_NOT_NEWER)
    .values(
        {
            **_SET_BALANCE,
            "open_iccid": None,
            "closed_at": sa.func.coalesce(
                BALANCES.c.closed_at, sa.bindparam("v_closed_at", type_=UTCDateTime())
            ),
        }
    )
    .returning(BALANCES.c.id)
)


@dataclass(frozen=True)
class _Upserts:
    """The dialect's upserts of lines and ledger events, built once (see _UPDATE_BALANCE).

    ``upsert_lines`` writes a workflow's lines, over rows that hold no newer revision;
    ``overwrite_lines`` the audit's, which are the carrier's truth: over any row, keeping
    its revision, so the workflow's next write still lands and an older one still not."""

    upsert_lines: Any
    overwrite_lines: Any
    append_events: Any


@cache
def _upserts(dialect: str) -> _Upserts:
    lines = dialect_insert_for(dialect, LINES)
    overwrite = {name: lines.excluded[name] for name in LINE_UPDATES}
    return _Upserts(
        upsert_lines=lines.on_conflict_do_update(
            index_elements=["balance_id", "seq"],
            set_={**overwrite, "revision": lines.excluded.revision},
            where=LINES.c.revision <= lines.excluded.revision,
        ),
        overwrite_lines=lines.on_conflict_do_update(
            index_elements=["balance_id", "seq"], set_=overwrite
        ),
        append_events=dialect_insert_for(dialect, LEDGER)
        .on_conflict_do_nothing()
        .returning(LEDGER.c.key),
    )


def _statements(session: Session) -> _Upserts:
    return _upserts(session.get_bind().dialect.name)


def _update_balance(session: Session, balance_id: str, record: BalanceRecord) -> bool:
    """Overwrite the balance row; False if there is none yet, or it holds a newer write."""
    # The first write takes the balance row's lock (PostgreSQL) or the database's write
    # lock (SQLite), so a racing attempt waits here and then writes the same values.
    now = datetime.now(UTC)
    params = {f"v_{name}": value for name, value in balance_row(record, now).items()}
    params["v_id"] = balance_id
    if record.closed:
        params["v_closed_at"] = now
    update = _CLOSE_BALANCE if record.closed else _UPDATE_BALANCE
    return session.execute(update, params).first() is not None


def _adopt_balance(session: Session, changes: RecordChanges) -> None:
    """A workflow started outside the enrolment path still gets its rows (then written
    over by ``_update_balance``)."""
    esim = {"iccid": changes.iccid, "carrier": changes.carrier, "created_at": datetime.now(UTC)}
    session.execute(dialect_insert(session, Esim).values(esim).on_conflict_do_nothing())
    record = changes.balance
    balance = Balance(
        id=changes.balance_id,
        iccid=changes.iccid,
        open_iccid=None if record and record.closed else changes.iccid,
        carrier=changes.carrier,
        product_id=record.product_id if record else "",
        workflow_id=f"balance-{changes.iccid}",
    )
    row = balance.model_dump()
    session.execute(
        dialect_insert(session, Balance).values(row).on_conflict_do_nothing(index_elements=["id"])
    )
    if record is not None:
        _update_balance(session, changes.balance_id, record)


# A line's price is written once, by the first write that carries it, and never changed:
# the row lock this takes (PostgreSQL) or the database's write lock (SQLite) makes a
# racing attempt find it set, so exactly one write counts the purchase.
_SET_PRICE = (
    sa.update(LINES)
    .where(
        LINES.c.balance_id == sa.bindparam("p_balance_id", type_=LINES.c.balance_id.type),
        LINES.c.seq == sa.bindparam("p_seq", type_=LINES.c.seq.type),
        LINES.c.price_cents.is_(None),
    )
    .values(
        price_cents=sa.bindparam("p_price_cents", type_=LINES.c.price_cents.type),
        currency=sa.bindparam("p_currency", type_=LINES.c.currency.type),
    )
    .returning(LINES.c.seq)
)
# Which of a write's lines have no price yet: one read per write, so the usual write (its
# lines priced long ago) writes no price at all.
_UNPRICED = sa.select(LINES.c.seq).where(
    LINES.c.balance_id == sa.bindparam("balance_id", type_=LINES.c.balance_id.type),
    LINES.c.seq.in_(sa.bindparam("seqs", expanding=True)),
    LINES.c.price_cents.is_(None),
)


def _record_prices(session: Session, changes: RecordChanges) -> list[Line]:
    """Write the price of each line that carries one and whose row has none; return the
    lines this call priced (purchases recorded for the first time)."""
    priced = [line for line in changes.lines if line.price_cents is not None and line.currency]
    if not priced:
        return []
    seqs = [line.seq for line in priced]
    unpriced = set(
        session.execute(_UNPRICED, {"balance_id": changes.balance_id, "seqs": seqs}).scalars()
    )
    bought = []
    for line in priced:
        if line.seq in unpriced and session.execute(_SET_PRICE, price_row(changes, line)).first():
            bought.append(line)
    return bought


# A line's refund is written once, as its price: the first write of a line the carrier
# ended with the money credited back to the account's balance (``Line.refund``) sets it
# to the line's price, and a racing attempt finds it set. A bundle returned to the
# carrier's inventory is no refund: it is a bundle the account holds, not money.
_SET_REFUND = (
    sa.update(LINES)
    .where(
        LINES.c.balance_id == sa.bindparam("r_balance_id", type_=LINES.c.balance_id.type),
        LINES.c.seq == sa.bindparam("r_seq", type_=LINES.c.seq.type),
        LINES.c.refunded_cents.is_(None),
        LINES.c.price_cents.is_not(None),
    )
    .values(refunded_cents=LINES.c.price_cents)
    .returning(LINES.c.refunded_cents, LINES.c.currency)
)


def _record_refunds(session: Session, changes: RecordChanges) -> list[tuple[int, str]]:
    """Write the refund of each line ended with its price credited back, once; return
    the refunds this call wrote (cents, currency)."""
    refunded = []
    for line in changes.lines:
        if line.refund != "balance":
            continue
        params = {"r_balance_id": changes.balance_id, "r_seq": line.seq}
        row = session.execute(_SET_REFUND, params).first()
        if row is not None and row.currency is not None:
            refunded.append((int(row.refunded_cents), str(row.currency)))
    return refunded


def _upsert_lines(session: Session, changes: RecordChanges) -> None:
    now = datetime.now(UTC)
    rows = [line_row(changes, line, now) for line in changes.lines]
    statements = _statements(session)
    upsert = statements.upsert_lines if changes.balance else statements.overwrite_lines
    session.execute(upsert, rows)
