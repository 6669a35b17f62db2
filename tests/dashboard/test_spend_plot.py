"""The fleet's spend as the dashboard shows it, without a server: figures as said (unpriced
never 0), today and this month apart, and the plot's bars from given day totals."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

import pytest

from api.dashboard import spend
from api.dashboard.spend import PLOT_DAYS, PLOT_HEIGHT, TOP, chart, figure, nice_ceiling
from models.spend import Tally

NOW = datetime(2026, 12, 7, 11, 30, tzinfo=UTC)
TODAY = NOW.date()
BASE = TOP + PLOT_HEIGHT


def _days(last: date = TODAY, n: int = PLOT_DAYS) -> list[date]:
    return [last - timedelta(days=n - 1 - i) for i in range(n)]


def _rects(svg: str) -> list[dict[str, str]]:
    return [dict(re.findall(r'([\w-]+)="([^"]*)"', m)) for m in re.findall(r"<rect ([^>]*)>", svg)]


@pytest.mark.parametrize(
    ("tally", "amount", "passes"),
    [
        (None, "0.00", "no passes"),
        (Tally("telna", "USD", 150, 1, 0), "1.50", "1 pass"),
        (Tally("telna", "USD", 1250, 3, 0), "12.50", "3 passes"),
        (Tally("telna", "USD", 0, 1, 0), "0.00", "1 pass"),  # a free pass is known to cost 0
        (Tally("telna", "USD", 325, 3, 1), "3.25", "3 passes, 1 unpriced"),
        (Tally("telna", "USD", None, 1, 1), "unpriced", "1 pass, unpriced"),
        (Tally("telna", "USD", None, 2, 2), "unpriced", "2 passes, all unpriced"),
    ],
)
def test_figures_say_unpriced_passes_never_as_zero(
    tally: Tally | None, amount: str, passes: str
) -> None:
    shown = figure(tally, "USD")
    assert (shown.amount, shown.passes, shown.currency) == (amount, passes, "USD")


@pytest.mark.parametrize(
    ("cents", "top"),
    [(0, 1), (1, 1), (2, 2), (3, 5), (99, 100), (101, 200), (201, 250), (250, 250), (251, 500)],
)
def test_the_axis_tops_out_at_a_round_amount(cents: int, top: int) -> None:
    assert nice_ceiling(cents) == top


def test_bars_are_as_high_as_their_days_totals_and_stack_by_carrier() -> None:
    days = _days(n=4)
    daily = {
        days[0].isoformat(): [Tally("telna", "USD", 100, 1, 0)],
        days[1].isoformat(): [Tally("telna", "USD", 150, 1, 0), Tally("webbing", "USD", 100, 2, 0)],
        days[3].isoformat(): [
            Tally("webbing", "USD", None, 2, 2),
            Tally("esimgo", "EUR", 900, 1, 0),
        ],
    }
    plot = chart(days, daily, "USD", ["esimgo", "telna", "webbing"])
    assert plot.scale_cents == 250
    svg = str(plot.svg)
    bars = [
        (r["data-day"], r["data-carrier"], r["height"], r["y"])
        for r in _rects(svg)
        if "data-day" in r
    ]
    h = PLOT_HEIGHT
    assert bars == [
        (days[0].isoformat(), "telna", str(h * 100 / 250), str(BASE - h * 100 / 250)),
        (days[1].isoformat(), "telna", str(h * 150 / 250), str(BASE - h * 150 / 250)),
        (days[1].isoformat(), "webbing", str(h * 100 / 250), str(float(TOP))),
    ]
    # A day of only unpriced passes has no bar, but a mark that says how many; a day of
    # nothing has neither; another currency's passes are another plot's.
    assert re.search(rf'data-day="{days[3].isoformat()}" data-unpriced="2">\?', svg)
    assert f'<g class="day" data-day="{days[2].isoformat()}"></g>' in svg
    # esimgo bought in EUR only: not on the USD plot, nor in its legend; the colours are
    # the carriers' in every plot.
    assert "EUR" not in svg and "esimgo" not in svg
    assert {r["data-carrier"]: r["fill"] for r in _rects(svg) if "data-day" in r} == {
        "telna": spend.PALETTE[1],
        "webbing": spend.PALETTE[2],
    }
    assert (plot.total.amount, plot.total.passes) == ("3.50", "6 passes, 2 unpriced")


def test_the_plot_is_titled_described_and_escaped() -> None:
    days = _days(n=3)
    daily = {days[1].isoformat(): [Tally("<b>x</b>", "USD", 500, 1, 0)]}
    svg = str(chart(days, daily, "USD", ["<b>x</b>"]).svg)
    labelled = re.search(r'aria-labelledby="([^"]*)"', svg)
    assert labelled is not None and 'role="img"' in svg
    for element_id in labelled.group(1).split():
        assert f'id="{element_id}"' in svg
    assert re.search(r"<title id=[^>]*>Spend per UTC day in USD", svg)
    assert f"highest 5.00 USD on {days[1].isoformat()}" in svg
    assert "<b>" not in svg and "&lt;b&gt;x&lt;/b&gt;" in svg


def test_today_and_this_month_are_told_apart_per_currency_and_carrier() -> None:
    yesterday = (TODAY - timedelta(days=1)).isoformat()
    last_month = date(2026, 11, 28).isoformat()
    daily = {
        last_month: [Tally("telna", "USD", 1000, 1, 0)],
        yesterday: [Tally("telna", "USD", 200, 1, 0), Tally("esimgo", "EUR", 300, 1, 0)],
        TODAY.isoformat(): [Tally("telna", "USD", 150, 1, 0), Tally("webbing", "USD", None, 1, 1)],
    }
    shown = spend.summarize(daily, NOW)
    assert [(f.currency, f.amount, f.passes) for f in shown.today_totals] == [
        ("EUR", "0.00", "no passes"),
        ("USD", "1.50", "2 passes, 1 unpriced"),
    ]
    assert [(f.currency, f.amount, f.passes) for f in shown.month_totals] == [
        ("EUR", "3.00", "1 pass"),
        ("USD", "3.50", "3 passes, 1 unpriced"),
    ]
    assert [(c.carrier, c.currency, c.today.amount, c.month.amount) for c in shown.carriers] == [
        ("esimgo", "EUR", "0.00", "3.00"),
        ("telna", "USD", "1.50", "3.50"),
        ("webbing", "USD", "unpriced", "unpriced"),
    ]
    # Last month's pass is on the plot (the last 30 days), not in this month's figures.
    usd = next(c for c in shown.charts if c.currency == "USD")
    assert usd.total.amount == "13.50" and usd.days[-1].day == TODAY
    assert [c.currency for c in shown.charts] == ["EUR", "USD"]


def test_an_empty_fleet_has_no_figures_and_no_plot() -> None:
    shown = spend.summarize({}, NOW)
    assert (shown.today_totals, shown.month_totals, shown.carriers, shown.charts) == (
        [],
        [],
        [],
        [],
    )


@pytest.mark.parametrize(
    ("now", "first"),
    [
        (NOW, datetime(2026, 11, 8, tzinfo=UTC)),  # 30 days back reach past the 1st
        (datetime(2026, 12, 31, 23, 59, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)),
    ],
)
def test_the_view_reads_the_plots_days_and_the_whole_month(now: datetime, first: datetime) -> None:
    since, until = spend.window(now)
    assert since == first
    assert until == datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
