"""What the fleet view shows, read from the database in one short session.

Carriers' health comes from our own ledger, not from probing the carriers on every
refresh: a carrier is ``failing`` while any of its balances is ``Failing`` (a carrier
step past its deadline), ``degraded`` when a carrier step failed within the last hour
(``order_failed``, ``activation_failed``, ``failing`` events), else ``ok``. The time of
its last activation says whether it is still doing business with us at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlmodel import Session, col, func, select

from api.dashboard import spend as spend_view
from models.payloads import BalanceStatus
from models.spend import Filters, load_daily_spend
from models.tables import Balance, LineEvent, Product, utcnow

HEALTH_WINDOW = timedelta(hours=1)
RECENT_ACTIVATIONS = timedelta(days=1)
FAILURE_KINDS = ("order_failed", "activation_failed", "failing")
MAX_ROWS = 200


@dataclass
class CarrierHealth:
    carrier: str
    open_balances: int = 0
    failing_now: int = 0
    failures_last_hour: int = 0
    last_failure: str | None = None
    last_failure_at: datetime | None = None
    last_activation_at: datetime | None = None

    @property
    def verdict(self) -> str:
        if self.failing_now:
            return "failing"
        if self.failures_last_hour:
            return "degraded"
        return "ok"


@dataclass
class Fleet:
    by_state: dict[str, int]
    rotations: int
    balances: list[Balance]
    total: int
    carriers: list[CarrierHealth] = field(default_factory=list)

    @property
    def open(self) -> int:
        closed = {BalanceStatus.Cancelled.value, BalanceStatus.Completed.value}
        return sum(n for state, n in self.by_state.items() if state not in closed)


def load(session: Session, state: BalanceStatus | None) -> Fleet:
    """The figures of the whole fleet and the balances to list (``state`` filters the list)."""
    counts = session.exec(select(Balance.state, func.count()).group_by(Balance.state)).all()
    by_state = {s.value: 0 for s in BalanceStatus} | {row[0]: int(row[1]) for row in counts}
    rotations = session.exec(select(func.coalesce(func.sum(Balance.rotations), 0))).one()
    query = select(Balance)
    if state is not None:
        query = query.where(Balance.state == state.value)
    # Open balances first, then the most recently closed; newest first within each.
    query = query.order_by(
        col(Balance.closed_at).is_not(None),
        col(Balance.closed_at).desc(),
        col(Balance.created_at).desc(),
    )
    rows = list(session.exec(query.limit(MAX_ROWS)).all())
    return Fleet(by_state, int(rotations), rows, sum(by_state.values()), _health(session))


def load_spend(session: Session, now: datetime) -> spend_view.FleetSpend:
    """What the fleet's passes cost today, this month and on each of the last days: one
    grouped read of the lines bought since then (on the ``ordered_at`` index)."""
    since, until = spend_view.window(now)
    daily = load_daily_spend(session, Filters(since=since, until=until))
    return spend_view.summarize(daily, now)


def _health(session: Session) -> list[CarrierHealth]:
    carriers = set(session.exec(select(Product.carrier).distinct()).all())
    carriers |= set(session.exec(select(Balance.carrier).distinct()).all())
    health = {name: CarrierHealth(name) for name in sorted(carriers)}
    open_rows = session.exec(
        select(Balance.carrier, Balance.state, func.count())
        .where(col(Balance.closed_at).is_(None))
        .group_by(Balance.carrier, Balance.state)
    ).all()
    for carrier, state, count in open_rows:
        health[carrier].open_balances += int(count)
        if state == BalanceStatus.Failing.value:
            health[carrier].failing_now += int(count)
    since = utcnow() - HEALTH_WINDOW
    failures = session.exec(
        select(Balance.carrier, LineEvent)
        .join(Balance, col(Balance.id) == col(LineEvent.balance_id))
        .where(col(LineEvent.kind).in_(FAILURE_KINDS), col(LineEvent.at) >= since)
        .order_by(col(LineEvent.at))
    ).all()
    for carrier, event in failures:
        entry = health[carrier]
        entry.failures_last_hour += 1
        entry.last_failure_at = event.at
        entry.last_failure = str(event.detail.get("reason") or event.kind)
    for entry in health.values():
        entry.last_activation_at = _last_activation(session, entry.carrier)
    return list(health.values())


def _last_activation(session: Session, carrier: str) -> datetime | None:
    """The time of the carrier's latest ``activated`` event, read newest first through the
    last day's activations, else as the latest of each of its balances: either way a
    bounded walk of an index, however long the ledger."""
    recent = session.exec(
        select(LineEvent.at)
        .join(Balance, col(Balance.id) == col(LineEvent.balance_id))
        .where(
            LineEvent.kind == "activated",
            col(LineEvent.at) >= utcnow() - RECENT_ACTIVATIONS,
            Balance.carrier == carrier,
        )
        .order_by(col(LineEvent.at).desc())
        .limit(1)
    ).first()
    if recent is not None:
        return recent
    latest_of_balance = (
        select(LineEvent.at)
        .where(LineEvent.balance_id == Balance.id, LineEvent.kind == "activated")
        .order_by(col(LineEvent.at).desc())
        .limit(1)
        .correlate(Balance)
        .scalar_subquery()
    )
    latest: datetime | None = session.exec(
        select(func.max(latest_of_balance)).where(Balance.carrier == carrier)
    ).one()
    return latest
