"""The audit's reads and writes of the database: open balances by page, one balance as
the database says now (its lines with what they cost), a ghost line's correction, an
unpriced purchase's price, the catalogue's price of a product, and a finding's ledger
event (keyed so that an audit seeing the same thing again adds no second event)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import col, select

from carriers.base import CarrierLine
from models.db import dialect_insert, session_scope
from models.payloads import Policy
from models.prices import Price
from models.tables import Balance, BalanceLine, LineEvent, Product
from services.audit_rules import BalanceView, DbLine, Finding, Kind

KEY_LIMIT = 160  # LineEvent.key's column width


@dataclass(frozen=True)
class OpenBalance:
    balance_id: str
    iccid: str
    carrier: str


def read_page(database_url: str, after: str | None, limit: int) -> list[OpenBalance]:
    """Up to ``limit`` open balances with ids after ``after`` (keyset paging)."""
    query = sa.select(col(Balance.id), col(Balance.iccid), col(Balance.carrier)).where(
        col(Balance.open_iccid).is_not(None)
    )
    if after is not None:
        query = query.where(col(Balance.id) > after)
    with session_scope(database_url) as session:
        rows = session.execute(query.order_by(col(Balance.id)).limit(limit)).all()
    return [OpenBalance(*row) for row in rows]


def read_view(database_url: str, balance_id: str) -> BalanceView | None:
    """The balance with its lines as the database says now; None once it is closed, or
    when its product left the catalogue (nothing to judge it by)."""
    with session_scope(database_url) as session:
        b = session.get(Balance, balance_id)
        product = session.get(Product, b.product_id) if b is not None else None
        if b is None or b.open_iccid is None or product is None:
            return None
        lines = session.exec(select(BalanceLine).where(BalanceLine.balance_id == balance_id))
        return BalanceView(
            balance_id=b.id,
            iccid=b.iccid,
            carrier=b.carrier,
            line_seq=b.line_seq,
            paused=b.paused,
            lines_total=b.lines_total,
            opened_at=b.created_at,
            policy=Policy.model_validate(b.policy or {}),
            validity_seconds=product.validity_seconds,
            reset=product.reset,
            lines=[
                DbLine(
                    seq=line.seq,
                    reference=line.reference,
                    state=line.state,
                    carrier_line_id=line.carrier_line_id,
                    ordered_at=line.ordered_at,
                    price_cents=line.price_cents,
                    currency=line.currency,
                )
                for line in lines
            ],
        )


def correct_row(
    database_url: str, view: BalanceView, finding: Finding, found: CarrierLine | None
) -> None:
    """A ghost line's row takes the carrier's end; only while it still says open."""
    values: dict[str, Any] = {"state": finding.detail["state"], "updated_at": datetime.now(UTC)}
    if found is not None:
        values.update(activated_at=found.activated_at, ended_at=found.ended_at)
    with session_scope(database_url) as session:
        session.execute(
            sa.update(BalanceLine)
            .where(col(BalanceLine.balance_id) == view.balance_id)
            .where(col(BalanceLine.seq) == finding.seq)
            .where(col(BalanceLine.state).in_(("active", "scheduled")))
            .values(values)
        )


def record_price(database_url: str, view: BalanceView, finding: Finding) -> bool:
    """An unpriced purchase takes the price its package shows (the finding's detail), only
    while the row still has none (the spend ledger's rule: written once, never changed);
    True if this call wrote it."""
    cents, currency = finding.detail["carrier_price_cents"], finding.detail["carrier_currency"]
    with session_scope(database_url) as session:
        written = session.execute(
            sa.update(BalanceLine)
            .where(col(BalanceLine.balance_id) == view.balance_id)
            .where(col(BalanceLine.seq) == finding.seq)
            .where(col(BalanceLine.carrier_line_id) == finding.line_id)
            .where(col(BalanceLine.price_cents).is_(None))
            .values(price_cents=cents, currency=currency)
            .returning(col(BalanceLine.seq))
        )
        return written.first() is not None


def catalogue_price(database_url: str, carrier: str, carrier_product_id: str) -> Price | None:
    """The catalogue's price now of a carrier's product (its row as the last sync wrote
    it), or None if the catalogue does not hold it."""
    with session_scope(database_url) as session:
        row = session.execute(
            sa.select(col(Product.price_cents), col(Product.currency))
            .where(col(Product.carrier) == carrier)
            .where(col(Product.carrier_product_id) == carrier_product_id)
            .limit(1)
        ).first()
    return None if row is None else Price(int(row[0]), str(row[1]))


def event_key(balance_id: str, kind: Kind, subject: str) -> str:
    key = f"audit:{balance_id}:{kind.value}:{subject}"
    if len(key) <= KEY_LIMIT:
        return key
    digest = hashlib.sha256(subject.encode()).hexdigest()[:32]
    return f"audit:{balance_id}:{kind.value}:{digest}"


def recorded(database_url: str, keys: list[str]) -> set[str]:
    """Which of these finding keys the ledger holds already (one read on the unique key)."""
    with session_scope(database_url) as session:
        rows = session.execute(sa.select(col(LineEvent.key)).where(col(LineEvent.key).in_(keys)))
        return {str(key) for key in rows.scalars()}


def record_finding(
    database_url: str, view: BalanceView, finding: Finding, repaired: bool, now: datetime
) -> bool:
    """Insert the finding's ledger event; True if it is new (not seen by an earlier audit)."""
    row = {
        "key": event_key(view.balance_id, finding.kind, finding.subject),
        "balance_id": view.balance_id,
        "seq": finding.seq,
        "kind": f"audit_{finding.kind.value}",
        "actor": "audit",
        "at": now,
        "detail": {
            **finding.detail,
            "subject": finding.subject,
            "line_id": finding.line_id,
            "reference": finding.reference,
            "repairs": [r.value for r in finding.repairs],
            "repaired": repaired,
        },
    }
    with session_scope(database_url) as session:
        inserted = session.execute(
            dialect_insert(session, LineEvent)
            .values(row)
            .on_conflict_do_nothing()
            .returning(col(LineEvent.key))  # not rowcount: psycopg says -1
        )
        return inserted.first() is not None
