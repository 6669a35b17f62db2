"""The audit's price findings over a real database (SQLite and PostgreSQL): the spend
ledger as ``read_view`` reads it, against packages as a carrier lists them.

A line's price altered in the database is a ``price_mismatch`` where the package shows
what the carrier charged, recorded once however often audited; nulled, it is an
``unpriced_purchase``; a clean balance is neither. An unpriced purchase whose package
shows its price takes that price, once. (No carrier shows a price on a package today:
those packages are built here as one that did would list them.)"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.testing import ActivityEnvironment

from activities.audit import AuditActivities
from activities.store import StoreActivities
from carriers.base import CarrierLine
from models.db import migrate, session_scope
from models.payloads import Line, LineState
from models.tables import BalanceLine, LineEvent, Product
from services.audit_rules import Kind, Repair, compare
from services.audit_store import read_view, record_finding, record_price
from services.metrics import REGISTRY
from tests.store.builders import PRODUCT, changes, line, new_balance

# After the builders' lines (ordered from 2030-01-01): every package is old enough to judge.
NOW = datetime(2030, 1, 2, tzinfo=UTC)


def _balance(url: str) -> tuple[str, list[Line]]:
    """An open Telna balance on a 60 s pass: line 1 active, line 2 scheduled, each bought
    for 1.50 EUR."""
    migrate(url)
    with session_scope(url) as session:
        if session.get(Product, PRODUCT) is None:
            session.add(
                Product(
                    id=PRODUCT,
                    carrier="telna",
                    carrier_product_id="compressed-60s",
                    name="60 s",
                    allowance_bytes=10**9,
                    validity_seconds=60,
                    throttle_kbps=128,
                    price_cents=150,
                    currency="EUR",
                )
            )
    balance_id, iccid = new_balance()
    lines = [
        line(balance_id, 1, LineState.active).model_copy(
            update={"price_cents": 150, "currency": "EUR"}
        ),
        line(balance_id, 2).model_copy(update={"price_cents": 150, "currency": "EUR"}),
    ]
    ActivityEnvironment().run(
        StoreActivities(url).record_changes, changes(balance_id, iccid, lines, [])
    )
    return balance_id, lines


def _packages(lines: list[Line], charged: tuple[int, str] | None) -> list[CarrierLine]:
    """The lines' packages as the carrier lists them (no reference: Telna has no field),
    showing what it charged for each, or (every carrier today) nothing."""
    cents, currency = charged or (None, None)
    return [
        CarrierLine(
            line_id=str(one.line_id),
            iccid="",
            carrier_product_id=one.carrier_product_id,
            reference=None,
            status="active" if one.state is LineState.active else "scheduled",
            ordered_at=one.ordered_at or NOW,
            activated_at=one.activated_at,
            ends_at=one.ends_at,
            allowance_bytes=one.allowance_bytes,
            price_cents=cents,
            currency=currency,
        )
        for one in lines
    ]


def _set_price(
    url: str, balance_id: str, seq: int, cents: int | None, currency: str | None
) -> None:
    with session_scope(url) as session:
        session.execute(
            sa.update(BalanceLine)
            .where(col(BalanceLine.balance_id) == balance_id, col(BalanceLine.seq) == seq)
            .values(price_cents=cents, currency=currency)
        )


def _audit_events(url: str, balance_id: str) -> list[LineEvent]:
    with session_scope(url) as session:
        rows = session.exec(
            select(LineEvent)
            .where(LineEvent.balance_id == balance_id)
            .where(col(LineEvent.kind).startswith("audit_"))
        )
        return list(rows.all())


PRICE_KINDS = {Kind.unpriced_purchase, Kind.price_mismatch}


def _audit(url: str, balance_id: str, found: list[CarrierLine]) -> list[str]:
    """One audit of the balance's prices (the day after its lines, whose rotation's own
    findings are not this test's): what it found, recorded; the kinds new."""
    view = read_view(url, balance_id)
    assert view is not None
    new = []
    for finding in compare(view, found, NOW, 5.0, 60):
        if finding.kind in PRICE_KINDS and record_finding(url, view, finding, False, NOW):
            new.append(finding.kind.value)
    return new


def test_a_clean_balance_has_no_price_finding(database_url: str) -> None:
    balance_id, lines = _balance(database_url)
    assert _audit(database_url, balance_id, _packages(lines, (150, "EUR"))) == []
    assert _audit(database_url, balance_id, _packages(lines, None)) == []
    assert _audit_events(database_url, balance_id) == []


def test_a_price_altered_in_the_database_is_one_mismatch_where_the_carrier_shows_its_own(
    database_url: str,
) -> None:
    balance_id, lines = _balance(database_url)
    _set_price(database_url, balance_id, 1, 120, "EUR")
    charged = _packages(lines, (150, "EUR"))

    assert _audit(database_url, balance_id, charged) == ["price_mismatch"]
    assert _audit(database_url, balance_id, charged) == []  # seen again: not recorded again
    [event] = _audit_events(database_url, balance_id)
    assert (event.kind, event.seq) == ("audit_price_mismatch", 1)
    assert (event.detail["recorded"], event.detail["carrier"]) == ("1.20 EUR", "1.50 EUR")
    assert event.detail["repairs"] == ["flag"]
    # The row keeps what it says: money is never rewritten by the audit.
    view = read_view(database_url, balance_id)
    assert view is not None and view.lines[0].price_cents == 120
    # Where the carrier shows no price, nothing is compared.
    assert _audit(database_url, balance_id, _packages(lines, None)) == []


def test_a_price_nulled_in_the_database_is_one_unpriced_purchase_priced_where_shown(
    database_url: str,
) -> None:
    balance_id, lines = _balance(database_url)
    _set_price(database_url, balance_id, 2, None, None)

    assert _audit(database_url, balance_id, _packages(lines, None)) == ["unpriced_purchase"]
    assert _audit(database_url, balance_id, _packages(lines, None)) == []
    [event] = _audit_events(database_url, balance_id)
    assert (event.kind, event.seq, event.detail["repairs"]) == (
        "audit_unpriced_purchase",
        2,
        ["flag"],
    )

    # A carrier showing what it charged: the row takes that price, once.
    view = read_view(database_url, balance_id)
    assert view is not None
    found = compare(view, _packages(lines, (150, "EUR")), NOW, 5.0, 60)
    [finding] = [f for f in found if f.kind in PRICE_KINDS]
    assert finding.kind is Kind.unpriced_purchase and finding.repairs == [Repair.record_price]
    assert record_price(database_url, view, finding)
    assert not record_price(database_url, view, finding)  # priced already: never rewritten
    priced = read_view(database_url, balance_id)
    assert priced is not None
    assert [(r.seq, r.price_cents, r.currency) for r in priced.lines] == [
        (1, 150, "EUR"),
        (2, 150, "EUR"),
    ]
    assert _audit(database_url, balance_id, _packages(lines, (150, "EUR"))) == []


def _spent(currency: str = "EUR") -> float:
    value = REGISTRY.get_sample_value(
        "esim_spend_total", {"carrier": "telna", "currency": currency}
    )
    return value or 0.0


async def test_the_audits_repair_of_an_unpriced_purchase_writes_and_counts_it_once(
    database_url: str,
) -> None:
    """The price the package shows is written and counted in ``esim_spend`` as a purchase
    first recorded; a second audit (or a racing write) finds it set and counts nothing."""
    balance_id, lines = _balance(database_url)
    _set_price(database_url, balance_id, 2, None, None)
    view = read_view(database_url, balance_id)
    assert view is not None
    found = _packages(lines, (150, "EUR"))
    [finding] = [f for f in compare(view, found, NOW, 5.0, 60) if f.kind in PRICE_KINDS]
    # The record_price repair reaches neither a carrier nor Temporal.
    audit = AuditActivities({}, cast(Any, None), database_url, "unused")
    before = _spent()
    assert await audit._repair(view, finding, found, signal=False)
    assert _spent() - before == 1.5
    assert not await audit._repair(view, finding, found, signal=False)  # priced already
    assert _spent() - before == 1.5
