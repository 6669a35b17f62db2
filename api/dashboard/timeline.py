"""One eSIM's lines on a time axis, as inline SVG: pure functions, no I/O.

A timeline is a list of lanes, each a row of bars. Ours and the carrier's own view are
drawn the same way, one lane per line plus a coverage lane that says, for every moment,
whether the eSIM had no line (gap), one line at high speed, a line whose allowance was
used up (throttled), or two lines at once (overlap, normal during a switch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from markupsafe import Markup, escape

LABEL_WIDTH = 170
PLOT_WIDTH = 830
LANE_HEIGHT = 18
LANE_GAP = 5
GROUP_GAP = 22
AXIS_HEIGHT = 26
TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200)
MAX_TICKS = 8


@dataclass(frozen=True)
class Bar:
    """One stretch on a lane; ``kind`` is its CSS class (and what the legend explains)."""

    start: datetime
    end: datetime
    kind: str
    title: str
    data: dict[str, str] = field(default_factory=dict)


@dataclass
class Lane:
    label: str
    bars: list[Bar]
    data: dict[str, str] = field(default_factory=dict)


@dataclass
class Group:
    """Lanes drawn together under one heading (ours, the carrier's)."""

    title: str
    lanes: list[Lane]


def coverage(
    lines: Iterable[tuple[datetime, datetime]],
    throttled: Iterable[tuple[datetime, datetime]],
    start: datetime,
    end: datetime,
    paused: Iterable[tuple[datetime, datetime]] = (),
) -> list[tuple[datetime, datetime, str]]:
    """Stretches of ``[start, end]`` as ``gap``, ``paused``, ``high_speed``, ``throttled``,
    ``overlap``.

    ``lines`` are the intervals in which a line was active; ``throttled`` those in which
    the active line's allowance was used up; ``paused`` those in which an operator had
    paused the balance (no line then is no gap). Adjacent stretches of one kind merge.
    """
    active = [(max(a, start), min(b, end)) for a, b in lines if b > start and a < end]
    slow = [(a, b) for a, b in throttled if b > a]
    held = [(a, b) for a, b in paused if b > a]
    points = sorted(
        {start, end, *(t for span in active for t in span), *_edges(slow), *_edges(held)}
    )
    points = [p for p in points if start <= p <= end]
    stretches: list[tuple[datetime, datetime, str]] = []
    for a, b in zip(points, points[1:], strict=False):
        if b <= a:
            continue
        middle = a + (b - a) / 2
        count = sum(1 for s, e in active if s <= middle < e)
        if count == 0:
            kind = "paused" if any(s <= middle < e for s, e in held) else "gap"
        elif count > 1:
            kind = "overlap"
        elif any(s <= middle < e for s, e in slow):
            kind = "throttled"
        else:
            kind = "high_speed"
        if stretches and stretches[-1][2] == kind and stretches[-1][1] == a:
            stretches[-1] = (stretches[-1][0], b, kind)
        else:
            stretches.append((a, b, kind))
    return stretches


def _edges(spans: list[tuple[datetime, datetime]]) -> list[datetime]:
    return [t for span in spans for t in span]


def coverage_lane(label: str, stretches: list[tuple[datetime, datetime, str]]) -> Lane:
    bars = [
        Bar(a, b, kind, f"{kind.replace('_', ' ')} {_clock(a)}-{_clock(b)} ({_length(a, b)})")
        for a, b, kind in stretches
    ]
    return Lane(label, bars, {"coverage": "1"})


def seconds_of(stretches: list[tuple[datetime, datetime, str]], kind: str) -> float:
    return sum((b - a).total_seconds() for a, b, k in stretches if k == kind)


def tick_step(span_seconds: float) -> int:
    """The smallest round step that puts at most MAX_TICKS ticks on the axis."""
    for step in TICK_STEPS:
        if span_seconds / step <= MAX_TICKS:
            return step
    return 86400 * max(1, int(span_seconds // (86400 * MAX_TICKS)) + 1)


def render(groups: list[Group], start: datetime, end: datetime, now: datetime) -> Markup:
    """The SVG of ``groups`` over ``[start, end]`` with a marker at ``now``."""
    span = max((end - start).total_seconds(), 1.0)

    def x(t: datetime) -> float:
        offset = (min(max(t, start), end) - start).total_seconds()
        return round(LABEL_WIDTH + PLOT_WIDTH * offset / span, 1)

    parts: list[str] = []
    y = AXIS_HEIGHT
    for group in groups:
        y += GROUP_GAP
        parts.append(f'<text class="group" x="4" y="{y - 6}">{escape(group.title)}</text>')
        for lane in group.lanes:
            parts.append(_lane(lane, y, x))
            y += LANE_HEIGHT + LANE_GAP
    height = y + 4
    axis = _axis(start, end, span, x, height)
    marker = ""
    if start <= now <= end:
        marker = (
            f'<line class="now" x1="{x(now)}" x2="{x(now)}" y1="{AXIS_HEIGHT - 4}" '
            f'y2="{height}"><title>now {_clock(now)}</title></line>'
        )
    width = LABEL_WIDTH + PLOT_WIDTH + 10
    return Markup(
        f'<svg class="timeline" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="timeline of lines" xmlns="http://www.w3.org/2000/svg">'
        f"{axis}{''.join(parts)}{marker}</svg>"
    )


def _lane(lane: Lane, y: int, x: Callable[[datetime], float]) -> str:
    label = f'<text class="lane" x="4" y="{y + LANE_HEIGHT - 5}">{escape(lane.label)}</text>'
    bars = []
    for bar in lane.bars:
        left, right = x(bar.start), x(bar.end)
        width = max(right - left, 1.5)
        data = "".join(f' data-{k}="{escape(v)}"' for k, v in {**lane.data, **bar.data}.items())
        bars.append(
            f'<rect class="bar {escape(bar.kind)}" x="{left}" y="{y}" width="{round(width, 1)}" '
            f'height="{LANE_HEIGHT}"{data}><title>{escape(bar.title)}</title></rect>'
        )
    return f'<g class="lane">{label}{"".join(bars)}</g>'


def _axis(
    start: datetime, end: datetime, span: float, x: Callable[[datetime], float], height: int
) -> str:
    step = tick_step(span)
    first = datetime.fromtimestamp((int(start.timestamp()) // step + 1) * step, UTC)
    parts = []
    tick = first
    while tick <= end:
        parts.append(
            f'<line class="tick" x1="{x(tick)}" x2="{x(tick)}" y1="{AXIS_HEIGHT - 6}" '
            f'y2="{height}"/><text class="tick" x="{x(tick)}" y="{AXIS_HEIGHT - 10}" '
            f'text-anchor="middle">{_clock(tick, step >= 86400)}</text>'
        )
        tick += timedelta(seconds=step)
    return "".join(parts)


def _clock(t: datetime, with_date: bool = False) -> str:
    return t.astimezone(UTC).strftime("%m-%d %H:%M" if with_date else "%H:%M:%S")


def _length(a: datetime, b: datetime) -> str:
    seconds = (b - a).total_seconds()
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
