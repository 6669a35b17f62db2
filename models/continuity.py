"""Continuity figures: gap, throttled and overlap seconds, rotations — from carrier times.

Every interval comes from what the carrier reported, not from our plan: a line serves
from its ``activated_at`` to its ``ended_at`` (an open line: until now), and throttled
from its ``exhausted_at`` (the carrier's time of the first usage seen at the allowance).
The eSIM is, at any moment, like the carrier's own timeline says:

- covered while at least one line is active; *overlap* while two or more are;
- *throttled* while covered and every active line is used up (a fresh line beside an
  exhausted one serves at high speed, so only the serving line's exhaustion counts);
- in a *gap* while no line is active, counted only while the balance is open and not
  paused, from its first activation on. A paused stretch runs from the ``paused`` to the
  ``resumed`` event; the time a resumed balance waits for its fresh line is a gap.

A balance's measured span ends at ``closed_at``, or now while open — or earlier, where
its closing began: at the ``cancel_requested`` event, and for a Completed balance at its
last line's end, so the carrier-side ending of the last line is not counted as a gap.

A *rotation* is a hand-over, one ``activated`` event with reason ``time``, ``usage`` or
``operator``; an *early rotation* is one for usage. A ``since`` cut measures only time
after it and counts rotations whose new line the carrier activated at or after it.

Pure functions here (no I/O); the ``load_`` functions read what they need from a Session
(``models.ledger_window``: of a window, only the window's rows) in two queries for any
number of balances.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

import sqlalchemy as sa
from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, or_
from sqlmodel import Session, col, select

from models.ledger_window import SERVING, figure_rows
from models.tables import Balance, BalanceLine, LineEvent

ROTATION_REASONS = frozenset({"time", "usage", "operator"})
# Figures over a window unless one is asked for: the last day.
DEFAULT_WINDOW = timedelta(hours=24)


class Continuity(BaseModel):
    """Continuity figures of one balance, or summed over several."""

    balances: int = Field(default=1, description="How many balances these figures cover")
    measured_seconds: float = Field(
        default=0.0, description="Open, unpaused seconds since the first activation"
    )
    gap_seconds: float = Field(default=0.0, description="Seconds with no active line")
    gap_seconds_max: float = Field(default=0.0, description="The largest one balance had")
    throttled_seconds: float = Field(
        default=0.0, description="Seconds whose every active line had its allowance used up"
    )
    overlap_seconds: float = Field(default=0.0, description="Seconds with two lines active")
    rotations: int = Field(default=0, description="Hand-overs from one line to the next")
    early_rotations: int = Field(default=0, description="Rotations caused by usage")


class FleetContinuity(BaseModel):
    """Continuity figures of every balance, in total and per carrier."""

    since: datetime | None = Field(description="Only time after this is measured")
    at: datetime = Field(description="When the figures were computed")
    total: Continuity
    carriers: dict[str, Continuity] = Field(description="By carrier name")


def balance_continuity(
    balance: Balance,
    lines: Iterable[BalanceLine],
    events: Iterable[LineEvent],
    now: datetime,
    since: datetime | None = None,
) -> Continuity:
    """The figures of one balance from its lines and ledger events, as of ``now``."""
    mine, ledger = list(lines), sorted(events, key=lambda e: e.at)
    starts = [line.activated_at for line in mine if line.activated_at is not None]
    if not starts:
        return Continuity()
    begin = max(min(starts), since) if since is not None else min(starts)
    end = _span_end(balance, mine, ledger, now)
    if end <= begin:
        return Continuity()
    measured, gap, throttled, overlap = _sweep(mine, pauses(ledger, end), begin, end)
    rotations, early = _rotations(mine, ledger, since)
    return Continuity(
        measured_seconds=measured,
        gap_seconds=gap,
        gap_seconds_max=gap,
        throttled_seconds=throttled,
        overlap_seconds=overlap,
        rotations=rotations,
        early_rotations=early,
    )


def fleet_continuity(
    balances: Sequence[Balance],
    lines: Iterable[BalanceLine],
    events: Iterable[LineEvent],
    now: datetime,
    since: datetime | None = None,
) -> FleetContinuity:
    """The figures of ``balances`` summed, in total and per carrier."""
    figures = per_balance(balances, lines, events, now, since)
    by_carrier: dict[str, list[Continuity]] = defaultdict(list)
    for balance in balances:
        by_carrier[balance.carrier].append(figures[balance.id])
    return FleetContinuity(
        since=since,
        at=now,
        total=total(figures.values()),
        carriers={carrier: total(group) for carrier, group in sorted(by_carrier.items())},
    )


def per_balance(
    balances: Sequence[Balance],
    lines: Iterable[BalanceLine],
    events: Iterable[LineEvent],
    now: datetime,
    since: datetime | None = None,
) -> dict[str, Continuity]:
    """The figures of each balance by its id; lines and events of others are ignored."""
    lines_of: dict[str, list[BalanceLine]] = defaultdict(list)
    events_of: dict[str, list[LineEvent]] = defaultdict(list)
    for line in lines:
        lines_of[line.balance_id].append(line)
    for event in events:
        events_of[event.balance_id].append(event)
    return {
        b.id: balance_continuity(b, lines_of[b.id], events_of[b.id], now, since) for b in balances
    }


def total(figures: Iterable[Continuity]) -> Continuity:
    """Figures summed over balances; ``gap_seconds_max`` is the largest single one."""
    parts = list(figures)
    return Continuity(
        balances=sum(f.balances for f in parts),
        measured_seconds=sum(f.measured_seconds for f in parts),
        gap_seconds=sum(f.gap_seconds for f in parts),
        gap_seconds_max=max((f.gap_seconds_max for f in parts), default=0.0),
        throttled_seconds=sum(f.throttled_seconds for f in parts),
        overlap_seconds=sum(f.overlap_seconds for f in parts),
        rotations=sum(f.rotations for f in parts),
        early_rotations=sum(f.early_rotations for f in parts),
    )


def load_continuity(
    session: Session, balances: Sequence[Balance], now: datetime, since: datetime | None = None
) -> dict[str, Continuity]:
    """The figures of each of ``balances`` by id, from the rows their window needs."""
    if not balances:
        return {}
    ids = col(Balance.id).in_([b.id for b in balances])
    lines, events = figure_rows(session, ids, since)
    return per_balance(balances, lines, events, now, since)


def load_balance_continuity(
    session: Session, balance: Balance, now: datetime, since: datetime | None = None
) -> Continuity | None:
    """One balance's figures; None while none of its lines has ever been active."""
    lines, events = figure_rows(session, col(Balance.id) == balance.id, since)
    if not any(line.activated_at is not None for line in lines):
        return None
    return balance_continuity(balance, lines, events, now, since)


def load_fleet_continuity(
    session: Session, now: datetime, since: datetime | None = None
) -> FleetContinuity:
    """The fleet's figures: every balance open at or after ``since`` (all without it).

    Three queries whatever the fleet's size: the balances, then their lines and events
    selected by the same condition (not by a list of ids), of the window only.
    """
    alive: ColumnElement[bool] = sa.true()
    if since is not None:
        alive = or_(col(Balance.closed_at).is_(None), col(Balance.closed_at) >= since)
    balances = session.exec(select(Balance).where(alive)).all()
    lines, events = figure_rows(session, alive, since)
    return fleet_continuity(balances, lines, events, now, since)


# --- intervals ------------------------------------------------------------------------


def _line_end(line: BalanceLine, until: datetime) -> datetime | None:
    """Where the carrier says the line stopped serving; an open line serves until now."""
    if line.ended_at is not None:
        return line.ended_at
    if line.state in SERVING:
        return until
    return line.ends_at  # ended, but the carrier gave no end time: its window's end


def _span_end(
    balance: Balance, lines: list[BalanceLine], events: list[LineEvent], now: datetime
) -> datetime:
    end = balance.closed_at or now
    for event in events:
        if event.kind == "cancel_requested":
            end = min(end, event.at)
            break
    if balance.state == "Completed":
        ends = [_line_end(line, end) for line in lines if line.activated_at is not None]
        end = min(end, max((e for e in ends if e is not None), default=end))
    return end


def pauses(events: list[LineEvent], end: datetime) -> list[tuple[datetime, datetime]]:
    """The paused stretches, from ``paused`` to ``resumed`` (or ``end``), in time order."""
    stretches: list[tuple[datetime, datetime]] = []
    paused_at: datetime | None = None
    for event in sorted(events, key=lambda e: e.at):
        if event.kind == "paused" and paused_at is None:
            paused_at = event.at
        elif event.kind == "resumed" and paused_at is not None:
            stretches.append((paused_at, event.at))
            paused_at = None
    if paused_at is not None:
        stretches.append((paused_at, end))
    return stretches


def _sweep(
    lines: list[BalanceLine],
    pauses: list[tuple[datetime, datetime]],
    begin: datetime,
    end: datetime,
) -> tuple[float, float, float, float]:
    """(measured, gap, throttled, overlap) seconds between ``begin`` and ``end``.

    One pass over the sorted moments where something changes: the number of active
    lines, of those still at high speed, and of pauses in force.
    """
    changes: list[tuple[datetime, int, int, int]] = []  # at, active, high speed, paused
    for line in lines:
        start = line.activated_at
        stop = _line_end(line, end) if start is not None else None
        if start is None or stop is None or stop <= start:
            continue
        changes += [(start, 1, 1, 0), (stop, -1, 0, 0)]
        fast_until = min(stop, max(start, line.exhausted_at or stop))
        changes.append((fast_until, 0, -1, 0))
    for paused_at, resumed_at in pauses:
        changes += [(paused_at, 0, 0, 1), (resumed_at, 0, 0, -1)]
    changes.sort(key=lambda c: c[0])
    measured = gap = throttled = overlap = 0.0
    active = fast = paused = 0
    previous = begin
    for at, d_active, d_fast, d_paused in [*changes, (end, 0, 0, 0)]:
        lo, hi = max(previous, begin), min(at, end)
        if hi > lo:
            seconds = (hi - lo).total_seconds()
            if not paused:
                measured += seconds
                gap += seconds if active == 0 else 0.0
            throttled += seconds if active > 0 and fast == 0 else 0.0
            overlap += seconds if active > 1 else 0.0
        previous = max(previous, at)
        active, fast, paused = active + d_active, fast + d_fast, paused + d_paused
    return measured, gap, throttled, overlap


def _rotations(
    lines: list[BalanceLine], events: list[LineEvent], since: datetime | None
) -> tuple[int, int]:
    """(rotations, early rotations): when cut, by the carrier's activation of the new line."""
    activated_at = {line.seq: line.activated_at for line in lines}
    rotations = early = 0
    for event in events:
        reason = event.detail.get("reason")
        if event.kind != "activated" or reason not in ROTATION_REASONS:
            continue
        at = activated_at.get(event.seq) if event.seq is not None else None
        if since is not None and (at or event.at) < since:
            continue
        rotations += 1
        early += reason == "usage"
    return rotations, early
