"""The fleet's spend as the dashboard shows it: pure functions over the ledger's day sums.

Figures come from ``models.spend`` (what the carriers will bill, by when a pass was
bought, in UTC): today and this month per currency, per carrier, and a plot of each of
the last ``PLOT_DAYS`` UTC days, one per currency, a bar per day stacked by carrier. A
pass without a recorded price is said as "unpriced", never counted as 0: a bar holds the
priced passes only, and a day with unpriced ones carries a "?" mark; the figures beside
it (and the plot's table) say how many. Nothing bought is 0.00, which it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from markupsafe import Markup, escape

from models.money import amount
from models.spend import Tally, per_currency, tally

PLOT_DAYS = 30
PLOT_HEIGHT = 150
DAY_WIDTH = 26
BAR_WIDTH = 18
LEFT = 70
TOP = 34
BOTTOM = 26
LABEL_EVERY = 7
# Carriers' colours, in the order of their names; more carriers than colours reuse them.
PALETTE = ("#1f9d55", "#3b82f6", "#f79009", "#7a5af8", "#d92d20", "#0e9384")
UNPRICED = "unpriced"
DAY = timedelta(days=1)


@dataclass(frozen=True)
class Figure:
    """What a group of passes cost, as shown: ``amount`` "12.50", "unpriced" when none of
    them has a price, "0.00" when none was bought; ``passes`` says how many, and how many
    of unknown price."""

    currency: str | None
    amount: str
    passes: str
    cents: int | None
    lines: int
    unpriced: int


@dataclass(frozen=True)
class CarrierSpend:
    carrier: str
    currency: str | None
    today: Figure
    month: Figure


@dataclass(frozen=True)
class Segment:
    """One carrier's part of one day's bar."""

    day: date
    carrier: str
    cents: int
    y: float
    height: float
    title: str


@dataclass(frozen=True)
class Column:
    """One UTC day of a plot: its stacked segments, its passes of unknown price, and each
    carrier's figures (for the table beside the plot)."""

    day: date
    x: float
    segments: list[Segment]
    cents: int
    lines: int
    unpriced: int
    carriers: list[tuple[str, Figure]]


@dataclass(frozen=True)
class Chart:
    currency: str | None
    days: list[Column]
    scale_cents: int  # the top of the axis
    total: Figure
    carriers: list[str]

    @property
    def svg(self) -> Markup:
        return render(self)


@dataclass(frozen=True)
class FleetSpend:
    today: date
    month_start: date
    today_totals: list[Figure]  # per currency of this month's passes
    month_totals: list[Figure]
    carriers: list[CarrierSpend]
    charts: list[Chart]

    plot_days: int = PLOT_DAYS

    @property
    def first_day(self) -> date:
        return self.today - timedelta(days=self.plot_days - 1)


def window(now: datetime) -> tuple[datetime, datetime]:
    """The moments the fleet view reads between: from the plot's first day, or the
    month's if that is earlier (the 31st of a month), to the end of today (UTC)."""
    today = now.astimezone(UTC).date()
    first = min(today.replace(day=1), today - timedelta(days=PLOT_DAYS - 1))
    return datetime.combine(first, time(), UTC), datetime.combine(today, time(), UTC) + DAY


def figure(t: Tally | None, currency: str | None = None) -> Figure:
    """A group's figures as shown; ``None`` (nothing bought) is 0.00 in ``currency``."""
    if t is None or t.lines == 0:
        return Figure(currency, amount(0), "no passes", 0, 0, 0)
    shown = UNPRICED if t.cents is None else amount(t.cents)
    passes = f"{t.lines} pass" + ("" if t.lines == 1 else "es")
    if t.unpriced == t.lines:
        passes += ", all unpriced" if t.lines > 1 else ", unpriced"
    elif t.unpriced:
        passes += f", {t.unpriced} unpriced"
    if t.refunded:
        passes += f", net of {amount(t.refunded)} refunded"
    return Figure(t.currency, shown, passes, t.cents, t.lines, t.unpriced)


def summarize(daily: Mapping[str, Sequence[Tally]], now: datetime) -> FleetSpend:
    """The fleet's spend from ``daily`` (``models.spend.load_daily_spend`` from
    :func:`window`): today, this month, per carrier and the plots."""
    today = now.astimezone(UTC).date()
    month_start = today.replace(day=1)
    month = _within(daily, month_start, today)
    today_groups = _within(daily, today, today)
    currencies = [t.currency for t in per_currency(month)]
    month_totals = {t.currency: t for t in per_currency(month)}
    today_totals = {t.currency: t for t in per_currency(today_groups)}
    today_by_carrier = {(t.key, t.currency): t for t in today_groups}
    carriers = [
        CarrierSpend(
            t.key or "",
            t.currency,
            figure(today_by_carrier.get((t.key, t.currency)), t.currency),
            figure(t),
        )
        for t in month
    ]
    first = today - timedelta(days=PLOT_DAYS - 1)
    plotted = _within(daily, first, today)
    names = sorted({t.key or "" for t in plotted})
    charts = [
        chart([first + timedelta(days=n) for n in range(PLOT_DAYS)], daily, currency, names)
        for currency in [t.currency for t in per_currency(plotted)]
    ]
    return FleetSpend(
        today,
        month_start,
        [figure(today_totals.get(c), c) for c in currencies],
        [figure(month_totals[c], c) for c in currencies],
        carriers,
        charts,
    )


def chart(
    days: Sequence[date],
    daily: Mapping[str, Sequence[Tally]],
    currency: str | None,
    carriers: Sequence[str],
) -> Chart:
    """The plot of ``days`` in ``currency``: a bar per day, stacked by carrier (in the
    order of ``carriers``), its height the day's priced spend against a round top."""
    groups = {d: [t for t in daily.get(d.isoformat(), []) if t.currency == currency] for d in days}
    top = nice_ceiling(max((sum(t.cents or 0 for t in g) for g in groups.values()), default=0))
    rank = {name: n for n, name in enumerate(carriers)}
    columns: list[Column] = []
    for n, day in enumerate(days):
        y = float(TOP + PLOT_HEIGHT)
        segments: list[Segment] = []
        for t in sorted(groups[day], key=lambda t: rank.get(t.key or "", len(rank))):
            if not t.cents:
                continue
            height = max(round(PLOT_HEIGHT * t.cents / top, 1), 1.0)
            y = round(y - height, 1)
            title = f"{day.isoformat()} {t.key}: {amount(t.cents)} {currency or ''}".rstrip()
            title += f", {figure(t).passes}"
            segments.append(Segment(day, t.key or "", t.cents, y, height, title))
        columns.append(
            Column(
                day,
                LEFT + n * DAY_WIDTH + (DAY_WIDTH - BAR_WIDTH) / 2,
                segments,
                sum(t.cents or 0 for t in groups[day]),
                sum(t.lines for t in groups[day]),
                sum(t.unpriced for t in groups[day]),
                [(t.key or "", figure(t)) for t in groups[day]],
            )
        )
    total = figure(next(iter(per_currency(t for g in groups.values() for t in g)), None), currency)
    return Chart(currency, columns, top, total, list(carriers))


def nice_ceiling(cents: int) -> int:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``cents`` (at least 1):
    the top of a plot's axis, so its middle line reads as a round amount too."""
    if cents <= 1:
        return 1
    power = 1
    while True:
        for step in (1, 2, Decimal("2.5"), 5) if power >= 10 else (1, 2, 5):
            if step * power >= cents:
                return int(step * power)
        power *= 10


def render(c: Chart) -> Markup:
    """The SVG of one currency's plot, with a title and a description for screen readers
    (the table beside it holds every figure)."""
    name = escape(c.currency or "no-currency")
    currency = escape(c.currency or "")
    width = LEFT + DAY_WIDTH * len(c.days) + 10
    height = TOP + PLOT_HEIGHT + BOTTOM
    base = TOP + PLOT_HEIGHT
    first, last = c.days[0].day, c.days[-1].day
    busiest = max(c.days, key=lambda col: col.cents)
    description = f"{c.total.amount} {currency} over {len(c.days)} days, {c.total.passes}"
    if busiest.cents:
        description += f"; highest {amount(busiest.cents)} {currency} on {busiest.day.isoformat()}"
    parts = [
        f'<title id="spend-plot-{name}-title">Spend per UTC day in {currency or "no currency"},'
        f" {first.isoformat()} to {last.isoformat()}, stacked by carrier</title>",
        f'<desc id="spend-plot-{name}-desc">{description}.</desc>',
    ]
    for share, label in ((0, amount(0)), (Decimal("0.5"), None), (1, None)):
        y = round(base - PLOT_HEIGHT * float(share), 1)
        text = label or amount(int(c.scale_cents * share))
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{width - 10}" y1="{y}" y2="{y}" '
            f'stroke="#eaecf0"/><text class="tick" x="{LEFT - 6}" y="{y + 4}" '
            f'text-anchor="end">{text}</text>'
        )
    for n, col in enumerate(c.days):
        parts.append(_column(col, c.carriers))
        if n % LABEL_EVERY == (len(c.days) - 1) % LABEL_EVERY:
            parts.append(
                f'<text class="tick" x="{col.x + BAR_WIDTH / 2}" y="{height - 8}" '
                f'text-anchor="middle">{col.day.strftime("%m-%d")}</text>'
            )
    shown = {s.carrier for col in c.days for s in col.segments}
    parts.append(_legend([name for name in c.carriers if name in shown], c.carriers))
    parts.append(f'<text class="tick" x="{LEFT - 6}" y="17" text-anchor="end">{currency}</text>')
    return Markup(
        f'<svg class="spend-plot" id="spend-plot-{name}" data-currency="{currency}" '
        f'viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-labelledby="spend-plot-{name}-title spend-plot-{name}-desc" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}</svg>'
    )


def colour(carrier: str, carriers: Sequence[str]) -> str:
    index = carriers.index(carrier) if carrier in carriers else 0
    return PALETTE[index % len(PALETTE)]


def _column(col: Column, carriers: Sequence[str]) -> str:
    day = col.day.isoformat()
    parts = [
        f'<rect class="spend" x="{col.x}" y="{s.y}" width="{BAR_WIDTH}" height="{s.height}" '
        f'fill="{colour(s.carrier, carriers)}" data-day="{day}" '
        f'data-carrier="{escape(s.carrier)}" data-cents="{s.cents}">'
        f"<title>{escape(s.title)}</title></rect>"
        for s in col.segments
    ]
    if col.unpriced:
        top = min([s.y for s in col.segments], default=float(TOP + PLOT_HEIGHT))
        said = f"{day}: {col.unpriced} pass" + ("" if col.unpriced == 1 else "es")
        parts.append(
            f'<text class="unpriced" x="{col.x + BAR_WIDTH / 2}" y="{top - 3}" '
            f'text-anchor="middle" data-day="{day}" data-unpriced="{col.unpriced}">?'
            f"<title>{said} of unknown price (unpriced)</title></text>"
        )
    return f'<g class="day" data-day="{day}">{"".join(parts)}</g>'


def _legend(shown: Sequence[str], carriers: Sequence[str]) -> str:
    """The colours of the carriers ``shown`` (each as in every plot: by ``carriers``)."""
    parts = []
    x = LEFT
    for carrier in shown:
        parts.append(
            f'<rect x="{x}" y="8" width="12" height="10" rx="2" '
            f'fill="{colour(carrier, carriers)}"/><text x="{x + 16}" y="17">'
            f"{escape(carrier)}</text>"
        )
        x += 24 + 7 * len(carrier)
    parts.append(f'<text class="unpriced" x="{x}" y="17">? passes of unknown price</text>')
    return f'<g class="legend">{"".join(parts)}</g>'


def _within(daily: Mapping[str, Sequence[Tally]], first: date, last: date) -> list[Tally]:
    """The groups of the days from ``first`` to ``last``, added up per carrier and
    currency."""
    return tally(
        t
        for day, groups in daily.items()
        if first.isoformat() <= day <= last.isoformat()
        for t in groups
    )
