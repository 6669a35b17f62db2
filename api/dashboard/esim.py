"""One eSIM's page: its balance's lines as we record them beside the carrier's own view.

Ours are the ``balance_line`` rows, and the figures (gap, throttled, overlap seconds,
rotations) are ``models.continuity``'s over the same window as ``GET /v1/continuity``
(by default the last day). The timeline draws the newest lines; the table lists a page
of them, newest first. The carrier's are what its API answered for the ICCID a few
seconds ago at most (``find_lines``, read by a worker: ``api.dashboard.carrier_lines``);
a carrier that could not be read is shown as such. The carrier lane lists the balance's
lines and any line on the ICCID we do not know at all, which is what invariant 3 forbids
and an operator must see.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from markupsafe import Markup

from api.dashboard import timeline
from api.dashboard.timeline import Bar, Group, Lane
from carriers.base import CarrierLine
from models.continuity import Continuity, pauses
from models.tables import Balance, BalanceLine, LineEvent

# Lines drawn on the time axis; older ones stay in the table below it.
MAX_LINES_DRAWN = 12
# Lines in the table; older ones on the next page.
LINES_LISTED = 50
ENDED = ("expired", "exhausted", "cancelled")


@dataclass
class CarrierView:
    """The carrier's lines on an ICCID, first ordered first, or why they were not read."""

    lines: list[CarrierLine] = field(default_factory=list)
    error: str | None = None

    def named(self, references: Mapping[str, str]) -> CarrierView:
        """The lines with our reference where the carrier shows none (most carriers have
        no field for it): ``references`` maps a carrier line id to the reference of our
        line that is it."""
        lines = [
            line
            if line.reference or line.line_id not in references
            else line.model_copy(update={"reference": references[line.line_id]})
            for line in self.lines
        ]
        return CarrierView(lines, self.error)


@dataclass
class Row:
    """One line, ours and the carrier's, side by side; ``problem`` if they disagree."""

    seq: int | None
    reference: str
    ours: BalanceLine | None
    theirs: CarrierLine | None

    @property
    def problem(self) -> str | None:
        if self.ours is None:
            return "at the carrier, unknown to us"
        if self.theirs is None:
            return "not found at the carrier" if self.ours.carrier_line_id else None
        ours, theirs = self.ours.state, self.theirs.status
        if ours == "active" and theirs != "active":
            return f"active here, {theirs} at the carrier"
        if theirs == "active" and ours != "active":
            return f"{ours} here, active at the carrier"
        return None


@dataclass
class Timeline:
    svg: Markup
    rows: list[Row]
    figures: dict[str, Any]
    start: datetime
    end: datetime


@dataclass
class Layout:
    """Which lines the timeline draws and the span it covers, before the ledger is read:
    the pauses it shows are read from ``cover_from`` on."""

    carrier_lines: list[CarrierLine]  # the balance's at the carrier, and those unknown to us
    drawn: list[BalanceLine]
    drawn_theirs: list[CarrierLine]
    start: datetime
    end: datetime
    axis_end: datetime
    cover_from: datetime
    our_active: list[tuple[datetime, datetime]]
    their_active: list[tuple[datetime, datetime]]


def layout(
    balance: Balance,
    newest: list[BalanceLine],
    theirs: CarrierView,
    known_references: set[str],
    now: datetime,
) -> Layout:
    """The timeline of the balance's ``newest`` lines (up to ``MAX_LINES_DRAWN`` drawn)
    beside the carrier's; ``known_references`` are those of ours among the carrier's."""
    mine = f"{balance.id}:"
    carrier_lines = [
        line
        for line in theirs.lines
        if (line.reference or "").startswith(mine) or line.reference not in known_references
    ]
    drawn = sorted(newest, key=lambda line: line.seq)[-MAX_LINES_DRAWN:]
    first_seq = drawn[0].seq if drawn else 0
    drawn_theirs = [
        line
        for line in carrier_lines
        if _seq(line.reference, mine) is None or (_seq(line.reference, mine) or 0) >= first_seq
    ]
    end = balance.closed_at or now
    planned = [line.ends_at for line in drawn if line.ends_at and line.state == "active"]
    starts = [_start(line.ordered_at, line.activated_at) for line in drawn]
    starts += [_start(line.ordered_at, line.activated_at) for line in drawn_theirs]
    start = min([s for s in starts if s is not None] or [balance.created_at])
    axis_end = max([end, *planned]) if balance.closed_at is None else end
    axis_end = max(axis_end, start + timedelta(seconds=10))
    our_active = [(a, b) for line in drawn if (a := line.activated_at) and (b := _until(line, end))]
    their_active = [
        (a, b)
        for line in drawn_theirs
        if (a := line.activated_at) and (b := _their_until(line, end))
    ]
    cover_from = min([a for a, _ in our_active + their_active] or [start])
    return Layout(
        carrier_lines,
        drawn,
        drawn_theirs,
        start,
        end,
        axis_end,
        cover_from,
        our_active,
        their_active,
    )


def build(
    balance: Balance,
    plan: Layout,
    listed: list[BalanceLine],
    matched: list[BalanceLine],
    events: list[LineEvent],
    figures: Continuity,
    theirs: CarrierView,
    now: datetime,
) -> Timeline:
    """Lanes, the side-by-side rows and the coverage figures of one balance.

    ``listed`` are the lines the table shows, ``matched`` those of ours the carrier's
    lines name (so a carrier line of an unlisted line of ours is not shown as unknown);
    ``events`` hold the pauses from ``plan.cover_from`` on, ``figures`` are the window's.
    """
    mine = f"{balance.id}:"
    shown = {line.seq for line in listed}
    others = [line for line in matched if line.seq not in shown]
    rows = [
        row
        for row in _rows(listed + others, plan.carrier_lines)
        if row.ours is None or row.ours.seq in shown
    ]
    end = plan.end
    our_slow = [
        (line.exhausted_at, _until(line, end) or end) for line in plan.drawn if line.exhausted_at
    ]
    held = pauses(events, end)
    ours_cover = timeline.coverage(plan.our_active, our_slow, plan.cover_from, end, held)
    theirs_cover = timeline.coverage(plan.their_active, [], plan.cover_from, end, held)
    groups = [
        Group(
            "ours (balance_line)",
            [timeline.coverage_lane("coverage", ours_cover)]
            + [_our_lane(line, end, now) for line in plan.drawn],
        ),
        Group(
            f"carrier: {balance.carrier}" + (" (unreadable)" if theirs.error else ""),
            ([timeline.coverage_lane("coverage", theirs_cover)] if not theirs.error else [])
            + [_their_lane(line, mine, end, now) for line in plan.drawn_theirs],
        ),
    ]
    shown_figures = figures.model_dump() | {
        "carrier_gap_seconds": timeline.seconds_of(theirs_cover, "gap"),
        "carrier_overlap_seconds": timeline.seconds_of(theirs_cover, "overlap"),
    }
    svg = timeline.render(groups, plan.start, plan.axis_end, now)
    return Timeline(svg, rows, shown_figures, plan.start, plan.axis_end)


def _start(ordered_at: datetime | None, activated_at: datetime | None) -> datetime | None:
    return ordered_at or activated_at


def _until(line: BalanceLine, end: datetime) -> datetime | None:
    """Until when ``line`` was (or is) active, if it ever was."""
    if line.activated_at is None:
        return None
    if line.state == "active":
        return end
    return line.ended_at or line.ends_at


def _their_until(line: CarrierLine, end: datetime) -> datetime | None:
    if line.activated_at is None:
        return None
    if line.status == "active":
        return end
    return line.ended_at or line.ends_at


def _seq(reference: str | None, prefix: str) -> int | None:
    if reference and reference.startswith(prefix) and reference[len(prefix) :].isdigit():
        return int(reference[len(prefix) :])
    return None


def _usage(used: int, allowance: int) -> str:
    share = f" ({100 * used / allowance:.0f} %)" if allowance else ""
    return f"{used:,} of {allowance:,} bytes{share}"


def _our_lane(line: BalanceLine, end: datetime, now: datetime) -> Lane:
    data = {"side": "ours", "seq": str(line.seq), "state": line.state}
    title = f"line {line.seq} {line.state}; {_usage(line.used_bytes, line.allowance_bytes)}"
    bars: list[Bar] = []
    if line.state == "scheduled":
        if line.ordered_at:
            bars.append(Bar(line.ordered_at, end, "scheduled", f"{title}; ordered"))
    elif line.state == "failed":
        at = line.ordered_at or line.updated_at
        bars.append(Bar(at, line.ended_at or at, "failed", title))
    elif line.activated_at is None:
        at = line.ordered_at or line.updated_at
        bars.append(Bar(at, line.ended_at or at, "archived never", f"{title}; never active"))
    else:
        until = _until(line, end) or end
        kind = "active" if line.state == "active" else "archived"
        bars.append(Bar(line.activated_at, until, kind, title))
        if line.state == "active" and line.ends_at and line.ends_at > now:
            bars.append(Bar(now, line.ends_at, "planned", f"line {line.seq} ends {line.ends_at}"))
    return Lane(f"line {line.seq} · {line.state}", bars, data)


def _their_lane(line: CarrierLine, prefix: str, end: datetime, now: datetime) -> Lane:
    seq = _seq(line.reference, prefix)
    data = {"side": "carrier", "line": line.line_id, "status": line.status}
    if seq is not None:
        data["seq"] = str(seq)
    title = f"{line.line_id} {line.status}; {_usage(line.used_bytes, line.allowance_bytes)}"
    exhausted = line.allowance_bytes > 0 and line.used_bytes >= line.allowance_bytes
    bars: list[Bar] = []
    if line.activated_at is None:
        kind = "scheduled" if line.status == "scheduled" else "archived never"
        bars.append(Bar(line.ordered_at, line.ended_at or end, kind, title))
    else:
        kind = "active" if line.status == "active" else "archived"
        if exhausted:
            kind += " used-up"
        bars.append(Bar(line.activated_at, _their_until(line, end) or end, kind, title))
        if line.status == "active" and line.ends_at and line.ends_at > now:
            bars.append(Bar(now, line.ends_at, "planned", f"{line.line_id} ends {line.ends_at}"))
    label = f"line {seq} · {line.status}" if seq is not None else f"? {line.line_id}"
    return Lane(label, bars, data)


def _rows(ours: list[BalanceLine], theirs: list[CarrierLine]) -> list[Row]:
    by_ref = {line.reference: line for line in theirs if line.reference}
    by_id = {line.line_id: line for line in theirs}
    rows: list[Row] = []
    seen: set[str] = set()
    for line in sorted(ours, key=lambda x: x.seq, reverse=True):
        match = by_ref.get(line.reference) or by_id.get(line.carrier_line_id or "")
        if match is not None:
            seen.add(match.line_id)
        rows.append(Row(line.seq, line.reference, line, match))
    for other in theirs:
        if other.line_id not in seen:
            rows.insert(0, Row(None, other.reference or "", None, other))
    return rows
