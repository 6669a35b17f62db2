"""Figures over a window read from the window's rows equal those from the whole ledger.

Ledgers are drawn at random, odd ones included (lines ended before they were activated,
ended without an end time, events of lines that do not exist, several pauses and cancels
at one instant); times are whole quarter seconds so that sums of seconds are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from sqlmodel import Session, col, select

from models.continuity import (
    balance_continuity,
    fleet_continuity,
    load_balance_continuity,
    load_continuity,
    load_fleet_continuity,
    pauses,
)
from models.db import init_db, session_scope
from models.ledger_window import EVENT_KINDS, figure_rows
from models.tables import Balance, BalanceLine, Esim, LineEvent

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SPAN = 400  # seconds the lines and events of a ledger fall in
LINE_STATES = ("scheduled", "active", "expired", "exhausted", "cancelled", "failed")
BALANCE_STATES = ("Active", "Paused", "Failing", "Cancelled", "Completed")
KINDS = (*EVENT_KINDS, "ordered", "usage_threshold", "expired")
REASONS = ("time", "usage", "operator", "started by the carrier", None)


def at(quarters: int) -> datetime:
    return T0 + timedelta(seconds=quarters / 4)


moments = st.integers(-40, SPAN * 4).map(at)
maybe = st.none() | moments


@st.composite
def ledgers(draw: st.DrawFn) -> list[tuple[Balance, list[BalanceLine], list[LineEvent]]]:
    ledger = []
    for n in range(draw(st.integers(1, 4))):
        bid = f"bal_{n}"
        state = draw(st.sampled_from(BALANCE_STATES))
        closed = state in ("Cancelled", "Completed") or draw(st.booleans())
        balance = Balance(
            id=bid,
            iccid=f"89440000000000000{n:02d}",
            carrier=draw(st.sampled_from(("telna", "webbing"))),
            product_id="telna-daily-1gb",
            state=state,
            workflow_id=f"balance-{bid}",
            closed_at=draw(moments) if closed else None,
        )
        count = draw(st.integers(0, 7))
        lines = [
            BalanceLine(
                balance_id=bid,
                seq=seq,
                iccid=balance.iccid,
                carrier=balance.carrier,
                reference=f"{bid}:{seq}",
                product_id=balance.product_id,
                state=draw(st.sampled_from(LINE_STATES)),
                allowance_bytes=1000,
                activated_at=draw(st.none() | moments | moments),
                ends_at=draw(maybe),
                ended_at=draw(maybe),
                exhausted_at=draw(st.none() | st.none() | moments),
            )
            for seq in range(1, count + 1)
        ]
        events = []
        for i in range(draw(st.integers(0, 10))):
            kind = draw(st.sampled_from(KINDS))
            reason = draw(st.sampled_from(REASONS))
            events.append(
                LineEvent(
                    key=f"{bid}:{i}",
                    balance_id=bid,
                    seq=draw(st.none() | st.integers(1, count + 1)),
                    kind=kind,
                    actor="workflow",
                    at=draw(moments),
                    detail={} if reason is None else {"reason": reason},
                )
            )
        ledger.append((balance, lines, events))
    return ledger


@dataclass
class Window:
    since: datetime
    now: datetime
    pauses_since: datetime


windows = st.builds(
    Window,
    since=st.integers(-80, SPAN * 4 + 80).map(at),
    now=st.integers(SPAN * 4 - 200, SPAN * 4 + 200).map(at),
    pauses_since=st.integers(-80, SPAN * 4 + 80).map(at),
)


@pytest.fixture
def database(database_url: str) -> Iterator[str]:
    init_db(database_url)
    yield database_url


def _store(url: str, ledger: list[tuple[Balance, list[BalanceLine], list[LineEvent]]]) -> None:
    with session_scope(url) as session:
        for table in (LineEvent, BalanceLine, Balance, Esim):
            session.execute(delete(table))
        for balance, _, _ in ledger:
            session.add(Esim(iccid=balance.iccid, carrier=balance.carrier))
        session.flush()
        session.add_all([balance for balance, _, _ in ledger])
        session.flush()
        for _, lines, events in ledger:
            session.add_all([*lines, *events])


def _everything(session: Session) -> tuple[list[BalanceLine], list[LineEvent]]:
    """Every line and figure event, as the figures were read before windows."""
    lines = list(session.exec(select(BalanceLine)).all())
    events = session.exec(select(LineEvent).where(col(LineEvent.kind).in_(EVENT_KINDS))).all()
    return lines, sorted(events, key=lambda e: (e.at, e.id or 0))


def _held_after(events: list[LineEvent], start: datetime, end: datetime) -> list[Any]:
    return [(max(a, start), b) for a, b in pauses(events, end) if b > start]


SETTINGS = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@SETTINGS
@given(ledger=ledgers(), window=windows)
def test_a_window_read_gives_the_figures_of_the_whole_ledger(
    database: str,
    ledger: list[tuple[Balance, list[BalanceLine], list[LineEvent]]],
    window: Window,
) -> None:
    _store(database, ledger)
    since, now = window.since, window.now
    with session_scope(database) as session:
        balances = list(session.exec(select(Balance).order_by(col(Balance.id))).all())
        lines, events = _everything(session)
        by_id = load_continuity(session, balances, now, since)
        for balance in balances:
            mine = [line for line in lines if line.balance_id == balance.id]
            theirs = [event for event in events if event.balance_id == balance.id]
            whole = balance_continuity(balance, mine, theirs, now, since)
            assert by_id[balance.id] == whole, balance.id
            activated = any(line.activated_at is not None for line in mine)
            expected = whole if activated else None
            assert load_balance_continuity(session, balance, now, since) == expected
        alive = [b for b in balances if b.closed_at is None or b.closed_at >= since]
        expected_fleet = fleet_continuity(alive, lines, events, now, since)
        assert load_fleet_continuity(session, now, since) == expected_fleet


@SETTINGS
@given(ledger=ledgers(), window=windows)
def test_a_window_read_holds_the_pauses_from_where_it_is_asked(
    database: str,
    ledger: list[tuple[Balance, list[BalanceLine], list[LineEvent]]],
    window: Window,
) -> None:
    _store(database, ledger)
    start = min(window.since, window.pauses_since)
    with session_scope(database) as session:
        _, events = _everything(session)
        for balance, _, _ in ledger:
            read = figure_rows(
                session, col(Balance.id) == balance.id, window.since, window.pauses_since
            )[1]
            whole = [event for event in events if event.balance_id == balance.id]
            end = window.now
            assert _held_after(read, start, end) == _held_after(whole, start, end)


def _line(bid: str, seq: int, state: str, **times: datetime | None) -> BalanceLine:
    return BalanceLine(
        balance_id=bid,
        seq=seq,
        iccid="8944000000000000001",
        carrier="telna",
        reference=f"{bid}:{seq}",
        product_id="telna-daily-1gb",
        state=state,
        allowance_bytes=1000,
        **times,
    )


def _balance(state: str = "Active", closed_at: datetime | None = None) -> Balance:
    return Balance(
        id="bal_0",
        iccid="8944000000000000001",
        carrier="telna",
        product_id="telna-daily-1gb",
        state=state,
        workflow_id="balance-bal_0",
        closed_at=closed_at,
    )


def test_a_rotation_recorded_before_the_window_counts_by_the_carrier_activation(
    database: str,
) -> None:
    lines = [
        _line("bal_0", 1, "expired", activated_at=at(0), ended_at=at(400)),
        _line("bal_0", 2, "active", activated_at=at(404)),
    ]
    # Our clock behind the carrier's: the event is older than the line's activation.
    rotation = LineEvent(
        key="bal_0:1",
        balance_id="bal_0",
        seq=2,
        kind="activated",
        actor="workflow",
        at=at(396),
        detail={"reason": "time"},
    )
    _store(database, [(_balance(), lines, [rotation])])
    with session_scope(database) as session:
        balance = session.exec(select(Balance)).one()
        figures = load_balance_continuity(session, balance, at(800), since=at(400))
    assert figures is not None and figures.rotations == 1


def test_a_term_that_ended_before_the_window_measures_nothing_in_it(database: str) -> None:
    lines = [
        _line("bal_0", 1, "expired", activated_at=at(0), ended_at=at(200)),
        # Ended without the carrier saying when: no end of its own to count.
        _line("bal_0", 2, "expired", activated_at=at(100)),
    ]
    done = _balance("Completed", closed_at=at(800))
    _store(database, [(done, lines, [])])
    with session_scope(database) as session:
        balance = session.exec(select(Balance)).one()
        figures = load_balance_continuity(session, balance, at(1000), since=at(400))
    assert figures is not None and figures.measured_seconds == 0
