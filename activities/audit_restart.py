"""Continuing a balance whose workflow was lost, from the database and the carrier's truth.

A workflow that is gone (terminated by hand, failed, never started after enrolment) is
started again with a state rebuilt from what is known for certain: the balance row (product,
policy, term, pause), its lines, and the carrier's packages. A package is one of the
balance's lines when the database knows it (``services.audit_rules.identify``: by the
carrier's package id, by our reference only where the package carries one and the row
holds no package id yet), and the rebuilt line takes its seq and reference from that
row, never from the carrier. The new run adopts the active package and a scheduled one
after it, numbers its next order after the highest seq the database has ever seen, and
continues the ledger's event numbering and the balance row's revision, so it buys
nothing twice, overwrites no event, and its writes are not refused as older than the
rows.

A package the database does not know is not adopted, even one carrying our reference,
and the restore gives it no seq: most carriers carry no reference, and a seq read from
one would be a guess where they do not. If it is the order the gone run had in flight
(the carrier took it, the answer never reached the database), the new run orders that
seq again and its order looks before it buys, so it adopts the package rather than
buying another where the carrier's look can recognise it; whatever is left is the
audit's to find (``orphan_purchase``: recorded or ended where it carries our reference,
flagged for an operator where it carries none). The carrier's list of the
eSIM's packages may hold only recent ones (eSIM Go lists 15 unless asked for more): the
lines the database holds open are read one by one besides it, so what is adopted does not
depend on how far back the list goes. Two ways in, one rebuild: the audit restarts a
missing workflow with the rebuilt state (``AuditActivities``), and a balance enrolled
again has its new run rebuild its own state first (``RestoreActivities``). Either starts
with the id and conflict policy of enrolment (``balance-{iccid}``, USE_EXISTING): racing
a normal start, or another audit, leaves one workflow.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlmodel import col, select
from temporalio import activity

from activities.carrier import carrier_failure, merged
from carriers.base import Carrier, CarrierLine
from carriers.errors import CarrierError, CarrierRejected
from models import money
from models.db import session_scope
from models.payloads import (
    ARCHIVE_DEPTH,
    BalanceState,
    BalanceStatus,
    Line,
    LineState,
    Policy,
    ProductSpec,
    RestoreBalance,
    RestoredBalance,
    pass_problem,
)
from models.tables import Balance, BalanceLine, LineEvent, Product
from services.audit_rules import DbLine, end_state, identify
from services.enrolment import product_spec, resumed_revision


@dataclass
class Known:
    """What the database knows of one open balance, for a restart."""

    balance: Balance
    product: ProductSpec
    next_product: ProductSpec | None
    products: dict[str, ProductSpec]  # by carrier product id
    max_seq: int
    event_counter: int
    open_line_ids: list[str] = field(default_factory=list)  # the lines the database holds open
    lines: list[DbLine] = field(default_factory=list)  # every line of the balance
    # What each priced line cost: (ordered at, minor units, currency).
    prices: list[tuple[datetime | None, int, str]] = field(default_factory=list)


def read_known(database_url: str, balance_id: str) -> Known | None:
    """The balance if it is still open (it may have closed since it was read), else None."""
    with session_scope(database_url) as session:
        balance = session.get(Balance, balance_id)
        if balance is None or balance.open_iccid is None:
            return None
        rows = session.exec(select(Product).where(Product.carrier == balance.carrier)).all()
        sellable = [r for r in rows if pass_problem(r.allowance_bytes, r.validity_seconds) is None]
        products = {row.carrier_product_id: product_spec(row) for row in sellable}
        by_id = {spec.id: spec for spec in products.values()}
        product = by_id.get(balance.product_id)
        if product is None:
            return None
        line_rows = session.exec(
            select(
                BalanceLine.seq,
                BalanceLine.reference,
                BalanceLine.state,
                BalanceLine.carrier_line_id,
            ).where(BalanceLine.balance_id == balance_id)
        ).all()
        price_rows = session.exec(
            select(BalanceLine.ordered_at, BalanceLine.price_cents, BalanceLine.currency).where(
                BalanceLine.balance_id == balance_id, col(BalanceLine.price_cents).is_not(None)
            )
        ).all()
        keys = session.exec(
            select(LineEvent.key).where(
                col(LineEvent.key).startswith(f"{balance_id}:", autoescape=True)
            )
        ).all()
        session.expunge(balance)
    counters = [int(k.rsplit(":", 1)[1]) for k in keys if k.rsplit(":", 1)[1].isdigit()]
    lines = [
        DbLine(seq=seq, reference=reference, state=state, carrier_line_id=line_id)
        for seq, reference, state, line_id in line_rows
    ]
    return Known(
        balance=balance,
        product=product,
        next_product=by_id.get(balance.next_product_id or ""),
        products=products,
        max_seq=max((line.seq for line in lines), default=0),
        event_counter=max(counters, default=0),
        open_line_ids=[
            line.carrier_line_id
            for line in lines
            if line.carrier_line_id and line.state in (LineState.active, LineState.scheduled)
        ],
        prices=[
            (at, cents, currency or product.currency)
            for at, cents, currency in price_rows
            if cents is not None
        ],
        lines=lines,
    )


async def read_carrier(carrier: Carrier, iccid: str, known: Known) -> list[CarrierLine]:
    """The eSIM's packages as the carrier lists them, and each line the database holds
    open that the list left out (one it no longer knows is left out too)."""
    found = await carrier.find_lines(iccid)
    listed = {package.line_id for package in found}
    for line_id in known.open_line_ids:
        if line_id not in listed:
            try:
                found.append(await carrier.get_line(line_id))
            except CarrierRejected:
                continue
    return found


class RestoreActivities:
    """The state of a balance enrolled again, rebuilt for its new run."""

    def __init__(self, carriers: Mapping[str, Carrier], database_url: str) -> None:
        self._carriers = carriers
        self._url = database_url

    @activity.defn(name="restore_balance")
    async def restore_balance(self, req: RestoreBalance) -> RestoredBalance:
        """The balance's state from the database and the carrier; none if it has closed."""
        known = await asyncio.to_thread(read_known, self._url, req.balance_id)
        if known is None:
            return RestoredBalance(state=None)
        carrier = self._carriers[known.balance.carrier]
        try:
            found = await read_carrier(carrier, known.balance.iccid, known)
        except CarrierError as error:
            raise carrier_failure(error) from error
        moved, started = while_gone(known, found)
        return RestoredBalance(
            state=rebuild_state(known, found, datetime.now(UTC)),
            while_gone=moved,
            started_while_gone=started,
        )


def carrier_line(
    found: CarrierLine,
    seq: int,
    reference: str,
    spec: ProductSpec,
    state: LineState | None = None,
) -> Line:
    """Our Line ``seq`` for a package the carrier holds, in the carrier's words, under our
    ``reference`` (the database's, never the carrier's echo: most carriers have none);
    ``state``: why it ended, when we know better than the carrier says."""
    blank = Line(
        seq=seq,
        reference=reference,
        product_id=spec.id,
        carrier_product_id=found.carrier_product_id,
        allowance_bytes=found.allowance_bytes,
        validity_seconds=spec.validity_seconds,
    )
    if state is None and found.status == "ended":
        state = LineState(end_state(found))
    line = merged(blank, found)
    return line if state is None else line.model_copy(update={"state": state})


def _ours(known: Known, found: list[CarrierLine]) -> dict[int, Line]:
    """Only the packages the database knows, each under its row's seq and reference."""
    rows = identify(known.lines, found)
    ours: dict[int, Line] = {}
    for package in found:
        row = rows.get(package.line_id)
        if row is not None:
            spec = known.products.get(package.carrier_product_id, known.product)
            ours[row.seq] = carrier_line(package, row.seq, row.reference, spec)
    return ours


def while_gone(known: Known, found: list[CarrierLine]) -> tuple[list[Line], list[int]]:
    """What the carrier did to the lines the database holds open while no workflow ran:
    those whose state moved on (a scheduled one it started, one that ended by time or
    used up), and the seqs of the scheduled ones it started; pure. The new run writes
    them, so the database and the ledger agree with the carrier again."""
    was = {row.seq: row.state for row in known.lines if row.state in _OPEN}
    moved = [line for seq, line in sorted(_ours(known, found).items()) if seq in was]
    moved = [line for line in moved if line.state != was[line.seq]]
    started = [
        line.seq
        for line in moved
        if was[line.seq] == LineState.scheduled and line.activated_at is not None
    ]
    return moved, started


def rebuild_state(known: Known, found: list[CarrierLine], now: datetime) -> BalanceState:
    """The state a restarted workflow starts from; pure."""
    b = known.balance
    ours = _ours(known, found)
    active_seqs = [seq for seq, line in ours.items() if line.state == LineState.active]
    # The line the database names as current, if the carrier has it active; else the
    # newest active one.
    current = b.line_seq if b.line_seq in active_seqs else max(active_seqs, default=None)
    active = ours[current] if current is not None else None
    after = current or 0
    waiting = [s for s, line in ours.items() if line.state == LineState.scheduled and s > after]
    scheduled = ours[max(waiting)] if waiting else None
    ended = [line for s, line in sorted(ours.items()) if line.state not in _OPEN]
    today = [
        line
        for line in ours.values()
        if line.activated_at and line.activated_at.date() == now.date()
    ]
    spend: dict[str, int] = {}
    spend_today: dict[str, int] = {}
    for at, cents, currency in known.prices:
        money.add(spend, currency, cents)
        if at is not None and at.date() == now.date():
            money.add(spend_today, currency, cents)
    return BalanceState(
        balance_id=b.id,
        iccid=b.iccid,
        carrier=b.carrier,
        product=known.product,
        policy=Policy.model_validate(b.policy or {}),
        lines_total=b.lines_total,
        next_product=known.next_product,
        status=BalanceStatus.Paused if b.paused else BalanceStatus.Active,
        active=active,
        scheduled=scheduled,
        archived=ended[-ARCHIVE_DEPTH:],
        last_seq=max([known.max_seq, *ours]),
        paused=b.paused,
        day=now.date(),
        lines_today=len(today),
        spend_cents=spend,
        spend_day=now.date(),
        spend_today_cents=spend_today,
        rotations=b.rotations,
        event_counter=known.event_counter,
        revision=resumed_revision(b),
    )


_OPEN = (LineState.active, LineState.scheduled)
