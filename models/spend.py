"""The spend ledger: what the passes bought cost, summed per group and currency.

A purchase is a line the carrier holds a package for (``carrier_line_id`` set), dated by
when the carrier made it (``ordered_at``); a product change in place (Webbing) withdrawn
before it took effect is none (:func:`_purchase`). Its price is what buying it cost
(``models/prices.py``), in minor units; a line bought before prices were recorded has
none: it is counted among ``unpriced_lines`` of its product's currency, never as 0, and a
group of only such lines has no amount. What a carrier credited back to the account when
it ended a line unused (``refunded_cents``, eSIM Go's refund to balance) is taken off:
the amount is what the carriers will bill, and ``refunded`` says how much came back.
Amounts are minor units / 100 (two decimals), whatever the currency.

The database sums (one ``GROUP BY`` over the window's lines, on the ``ordered_at``
index); :func:`tally` orders and shapes the sums, and is what the tests hold to account.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlmodel import Session

from models.money import amount
from models.tables import Balance, BalanceLine, Product

GroupBy = Literal["carrier", "product", "day", "customer"]
GROUP_BYS: tuple[GroupBy, ...] = ("carrier", "product", "day", "customer")

LINES: sa.Table = BalanceLine.__table__  # type: ignore[attr-defined]
BALANCES: sa.Table = Balance.__table__  # type: ignore[attr-defined]
PRODUCTS: sa.Table = Product.__table__  # type: ignore[attr-defined]
# A line ended without ever serving (models.payloads.LineState).
WITHDRAWN_STATES = ("cancelled", "failed", "expired")


@dataclass(frozen=True)
class Tally:
    """One group's spend in one currency: ``cents`` what its priced lines cost, net of
    what was refunded (None if none is priced), ``lines`` bought, ``unpriced`` of them
    without a known price, ``refunded`` credited back. The database's sums are tallies
    too, which :func:`tally` adds up."""

    key: str | None
    currency: str | None
    cents: int | None
    lines: int
    unpriced: int
    refunded: int = 0

    @property
    def amount(self) -> str | None:
        """``cents`` in major units, two decimals: ``"12.50"``."""
        return None if self.cents is None else amount(self.cents)


def spent(t: Tally) -> dict[str, Any]:
    """A tally's figures as reports show them (API, CSV, ``starter.py status``)."""
    return {
        "currency": t.currency,
        "amount": t.amount,
        "amount_cents": t.cents,
        "lines": t.lines,
        "unpriced_lines": t.unpriced,
        "refunded": amount(t.refunded),
        "refunded_cents": t.refunded,
    }


def order_key(tally: Tally) -> tuple[bool, str, bool, str]:
    """Groups by key, then currency; no key (an eSIM of no customer) and no currency
    last."""
    return (tally.key is None, tally.key or "", tally.currency is None, tally.currency or "")


def tally(sums: Iterable[Tally]) -> list[Tally]:
    """The groups, one per key and currency, in order (``order_key``); sums of one key
    and currency (the database may split them) are added up."""
    merged: dict[tuple[str | None, str | None], Tally] = {}
    for s in sums:
        if s.lines <= 0:
            continue
        before = merged.get((s.key, s.currency))
        if before is None:
            merged[(s.key, s.currency)] = s
            continue
        merged[(s.key, s.currency)] = Tally(
            s.key,
            s.currency,
            _plus(before.cents, s.cents),
            before.lines + s.lines,
            before.unpriced + s.unpriced,
            before.refunded + s.refunded,
        )
    return sorted(merged.values(), key=order_key)


def _plus(a: int | None, b: int | None) -> int | None:
    """Two sums of prices, None standing for "no price known" (not for 0)."""
    if a is None or b is None:
        return b if a is None else a
    return a + b


def after(tallies: Sequence[Tally], key: str | None, currency: str | None) -> list[Tally]:
    """The groups that come after (``key``, ``currency``) in order: a page's start."""
    mark = order_key(Tally(key, currency, None, 0, 0))
    return [t for t in tallies if order_key(t) > mark]


@dataclass(frozen=True)
class Filters:
    """Which purchases a report counts: ordered on or after ``since`` and before
    ``until`` (UTC), of one carrier, of one customer's balances."""

    since: datetime | None = None
    until: datetime | None = None
    carrier: str | None = None
    customer_ref: str | None = None


def load_spend(session: Session, group_by: GroupBy, filters: Filters) -> list[Tally]:
    """The spend of the purchases ``filters`` selects, grouped by ``group_by``."""
    key = _key(session, group_by).label("key")
    return tally(_sums(session.execute(_grouped([key], filters))))


def load_daily_spend(session: Session, filters: Filters) -> dict[str, list[Tally]]:
    """The spend of the purchases ``filters`` selects per UTC day (``YYYY-MM-DD``, oldest
    first), each day's grouped by carrier: one ``GROUP BY`` over the window's lines, as
    :func:`load_spend`'s, keyed by day and carrier."""
    day = _key(session, "day").label("day")
    carrier = _key(session, "carrier").label("key")
    by_day: dict[str, list[Tally]] = {}
    for row in session.execute(_grouped([day, carrier], filters)):
        by_day.setdefault(_text(row.day) or "", []).extend(_sums([row]))
    return {d: tally(sums) for d, sums in sorted(by_day.items())}


def per_currency(tallies: Iterable[Tally]) -> list[Tally]:
    """Groups added up per currency, whatever their key (``key`` None): a fleet's total."""
    return tally(replace(t, key=None) for t in tallies)


# What each group's sums are: net of refunds (a line without a price adds nothing to
# ``cents``, and counts among the unpriced), the lines, the unpriced, the refunds.
_REFUNDED = sa.func.coalesce(LINES.c.refunded_cents, 0)
_FIGURES = (
    sa.func.sum(LINES.c.price_cents - _REFUNDED).label("cents"),
    sa.func.count().label("lines"),
    (sa.func.count() - sa.func.count(LINES.c.price_cents)).label("unpriced"),
    sa.func.coalesce(sa.func.sum(LINES.c.refunded_cents), 0).label("refunded"),
)


def _grouped(keys: Sequence[Any], filters: Filters) -> sa.Select[Any]:
    """The sums of the purchases ``filters`` selects, per ``keys`` and currency (a line's
    own, else its product's)."""
    currency = sa.func.coalesce(LINES.c.currency, PRODUCTS.c.currency).label("currency")
    return (
        sa.select(
            *keys,
            currency,
            *_FIGURES,
        )
        .select_from(
            LINES.join(BALANCES, BALANCES.c.id == LINES.c.balance_id).outerjoin(
                PRODUCTS, PRODUCTS.c.id == LINES.c.product_id
            )
        )
        .where(*_bought(filters))
        .group_by(*keys, currency)
    )


def load_balance_spend(session: Session, balance_id: str) -> list[Tally]:
    """One balance's spend per currency (``key`` None): every purchase it made."""
    currency = sa.func.coalesce(LINES.c.currency, PRODUCTS.c.currency).label("currency")
    query = (
        sa.select(
            sa.null().label("key"),
            currency,
            *_FIGURES,
        )
        .select_from(LINES.outerjoin(PRODUCTS, PRODUCTS.c.id == LINES.c.product_id))
        .where(LINES.c.balance_id == balance_id, _purchase())
        .group_by(currency)
    )
    return tally(_sums(session.execute(query)))


def _purchase() -> Any:
    """A line the carrier bills: one it holds a package for, except a product change in
    place withdrawn before it took effect (Webbing suspends the device, and bills none:
    the change is the purchase, made when it takes effect)."""
    withdrawn = sa.and_(
        sa.func.coalesce(PRODUCTS.c.rotation, "") == "in_place",
        LINES.c.activated_at.is_(None),
        LINES.c.state.in_(WITHDRAWN_STATES),
    )
    return sa.and_(LINES.c.carrier_line_id.is_not(None), sa.not_(withdrawn))


def _bought(filters: Filters) -> list[Any]:
    where: list[Any] = [_purchase(), LINES.c.ordered_at.is_not(None)]
    if filters.since is not None:
        where.append(LINES.c.ordered_at >= filters.since)
    if filters.until is not None:
        where.append(LINES.c.ordered_at < filters.until)
    if filters.carrier is not None:
        where.append(LINES.c.carrier == filters.carrier)
    if filters.customer_ref is not None:
        where.append(BALANCES.c.customer_ref == filters.customer_ref)
    return where


def _key(session: Session, group_by: GroupBy) -> Any:
    if group_by == "carrier":
        return LINES.c.carrier
    if group_by == "product":
        return LINES.c.product_id
    if group_by == "customer":
        return BALANCES.c.customer_ref
    # The UTC day: times are stored in UTC (models.tables.UTCDateTime).
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.date(sa.func.timezone("UTC", LINES.c.ordered_at))
    return sa.func.date(LINES.c.ordered_at)


def _sums(rows: Iterable[Any]) -> list[Tally]:
    return [
        Tally(
            key=_text(row.key),
            currency=row.currency,
            cents=None if row.cents is None else int(row.cents),
            lines=int(row.lines),
            unpriced=int(row.unpriced),
            refunded=int(row.refunded or 0),
        )
        for row in rows
    ]


def _text(key: Any) -> str | None:
    if key is None:
        return None
    return key.isoformat() if isinstance(key, date) else str(key)
