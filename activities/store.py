"""Store activities: write what a workflow step changed into the product database.

Writes are idempotent: lines are upserted by (balance, seq), ledger events are keyed by
the workflow, and the balance row is overwritten with the workflow's latest view. So a
retried attempt, or one racing its own first attempt, leaves the same rows behind.
These are synchronous (SQLAlchemy sessions) and run in the worker's thread pool.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select
from temporalio import activity

from models.db import session_scope
from models.payloads import BalanceRecord, Line, RecordChanges
from models.tables import Balance, BalanceLine, Esim, LineEvent


class StoreActivities:
    """Activities against the product database at ``database_url``."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    @activity.defn(name="record_changes")
    def record_changes(self, changes: RecordChanges) -> None:
        """Upsert the balance and its lines and append the ledger events, in one transaction."""
        try:
            with session_scope(self._url) as session:
                self._write(session, changes)
        except IntegrityError:
            # A concurrent attempt inserted the same line or event first: write again
            # over what it left, which is now an update.
            with session_scope(self._url) as session:
                self._write(session, changes)

    def _write(self, session: Session, changes: RecordChanges) -> None:
        balance = session.get(Balance, changes.balance_id)
        if balance is None:
            balance = _adopt_balance(session, changes)
        if changes.balance is not None:
            _apply_balance(balance, changes.balance)
            session.add(balance)
        for line in changes.lines:
            _upsert_line(session, changes, line)
        keys = [event.key for event in changes.events]
        if keys:
            seen = set(session.exec(select(LineEvent.key).where(col(LineEvent.key).in_(keys))))
            for event in changes.events:
                if event.key not in seen:
                    session.add(LineEvent(**event.model_dump()))
        activity.logger.debug(
            "recorded %d lines, %d events for %s",
            len(changes.lines),
            len(changes.events),
            changes.balance_id,
        )


def _adopt_balance(session: Session, changes: RecordChanges) -> Balance:
    """A workflow started outside the enrolment path still gets its rows."""
    if session.get(Esim, changes.iccid) is None:
        session.add(Esim(iccid=changes.iccid, carrier=changes.carrier))
        session.flush()  # no ORM relationship orders the inserts for us
    record = changes.balance
    balance = Balance(
        id=changes.balance_id,
        iccid=changes.iccid,
        open_iccid=changes.iccid,
        carrier=changes.carrier,
        product_id=record.product_id if record else "",
        workflow_id=f"balance-{changes.iccid}",
    )
    session.add(balance)
    session.flush()
    return balance


def _apply_balance(balance: Balance, record: BalanceRecord) -> None:
    now = datetime.now(UTC)
    balance.state = record.status.value
    balance.product_id = record.product_id
    balance.next_product_id = record.next_product_id
    balance.line_seq = record.line_seq
    balance.line_ends_at = record.line_ends_at
    balance.rotations = record.rotations
    balance.paused = record.paused
    balance.capped = record.capped
    balance.failing_reason = record.failing_reason
    balance.updated_at = now
    if record.closed and balance.closed_at is None:
        balance.closed_at = now
        balance.open_iccid = None


def _upsert_line(session: Session, changes: RecordChanges, line: Line) -> None:
    row = session.exec(
        select(BalanceLine).where(
            BalanceLine.balance_id == changes.balance_id, BalanceLine.seq == line.seq
        )
    ).first()
    if row is None:
        row = BalanceLine(
            balance_id=changes.balance_id,
            seq=line.seq,
            iccid=changes.iccid,
            carrier=changes.carrier,
            reference=line.reference,
            product_id=line.product_id,
            state=line.state.value,
            allowance_bytes=line.allowance_bytes,
        )
    row.carrier_line_id = line.line_id
    row.product_id = line.product_id
    row.state = line.state.value
    row.allowance_bytes = line.allowance_bytes
    row.used_bytes = line.used_bytes
    row.ordered_at = line.ordered_at
    row.activated_at = line.activated_at
    row.ends_at = line.ends_at
    row.ended_at = line.ended_at
    row.updated_at = datetime.now(UTC)
    session.add(row)
