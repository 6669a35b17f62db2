"""The fleet view's spend on SQLite and PostgreSQL: today, this month, per carrier and per
day equal the priced passes bought, read in one grouped query; and the fleet page shows
them, or says honestly that nothing was bought."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from api.app import create_app
from api.dashboard import fleet as fleet_view
from api.dashboard.spend import figure
from models.db import get_engine, init_db, migrate, session_scope
from models.money import amount
from models.spend import Tally
from models.tables import Balance, BalanceLine, Esim
from tests.api.conftest import new_iccid, product
from tests.api.helpers import NoTemporal, offline_api, offline_settings
from tests.dashboard.test_long_history import _signed_in

NOW = datetime(2030, 3, 15, 12, 0, tzinfo=UTC)
PRODUCTS = {"telna": "USD", "webbing": "USD", "esimgo": "EUR"}


@dataclass(frozen=True)
class Bought:
    carrier: str
    ordered_at: datetime
    cents: int | None
    bought: bool = True  # a line the carrier holds a package for


LINES = [
    Bought("telna", NOW - timedelta(hours=2), 150),
    Bought("telna", NOW - timedelta(hours=1), None),  # unpriced, in its product's USD
    Bought("webbing", NOW.replace(hour=0, minute=0), 275),  # the first moment of today
    Bought("esimgo", NOW - timedelta(hours=3), 300),
    Bought("telna", datetime(2030, 3, 2, 9, tzinfo=UTC), 200),
    Bought("webbing", datetime(2030, 3, 1, 0, 0, tzinfo=UTC), None),
    Bought("telna", datetime(2030, 2, 20, 23, 59, tzinfo=UTC), 500),  # last month, plotted
    Bought("esimgo", datetime(2030, 2, 14, 0, 0, tzinfo=UTC), 90),  # the plot's first day
    Bought("telna", datetime(2030, 2, 13, 23, 59, tzinfo=UTC), 9_999),  # before the plot
    Bought("telna", NOW - timedelta(minutes=5), 777, bought=False),  # never bought
    Bought("telna", NOW + timedelta(days=1), 888),  # tomorrow: not yet (a clock ahead)
]


def _seed(url: str, lines: list[Bought]) -> None:
    with session_scope(url) as session:
        for carrier, currency in PRODUCTS.items():
            item = product(carrier, "daily", 86_400)
            item.currency = currency
            session.add(item)
        session.flush()
        for n, line in enumerate(lines):
            iccid = new_iccid()
            balance = Balance(
                id=f"bal_fleet{n:06d}",
                iccid=iccid,
                carrier=line.carrier,
                product_id=f"{line.carrier}-daily",
                workflow_id=f"balance-{iccid}",
            )
            session.add(Esim(iccid=iccid, carrier=line.carrier))
            session.flush()
            session.add(balance)
            session.flush()
            session.add(
                BalanceLine(
                    balance_id=balance.id,
                    seq=1,
                    iccid=iccid,
                    carrier=line.carrier,
                    carrier_line_id=f"pkg-{n}" if line.bought else None,
                    reference=f"{balance.id}:1",
                    product_id=balance.product_id,
                    state="expired",
                    allowance_bytes=1_000_000,
                    ordered_at=line.ordered_at,
                    price_cents=line.cents,
                    currency=PRODUCTS[line.carrier] if line.cents is not None else None,
                )
            )


def _expected(first: date, last: date) -> dict[tuple[str, str], tuple[str, int, int]]:
    """(carrier, currency) -> (amount, passes, unpriced) of the passes bought from
    ``first`` to ``last`` (UTC days), as the figures must say them."""
    sums: dict[tuple[str, str], list[Any]] = defaultdict(lambda: [None, 0, 0])
    for line in LINES:
        if line.bought and first <= line.ordered_at.date() <= last:
            entry = sums[(line.carrier, PRODUCTS[line.carrier])]
            if line.cents is not None:
                entry[0] = (entry[0] or 0) + line.cents
            entry[1] += 1
            entry[2] += line.cents is None
    return {
        key: ("unpriced" if cents is None else amount(cents), passes, unpriced)
        for key, (cents, passes, unpriced) in sums.items()
    }


def test_fleet_spend_equals_the_priced_passes_bought(database_url: str) -> None:
    migrate(database_url)
    _seed(database_url, LINES)
    statements: list[str] = []
    engine = get_engine(database_url)

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        with session_scope(database_url) as session:
            shown = fleet_view.load_spend(session, NOW)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1

    today, month = NOW.date(), NOW.date().replace(day=1)
    by_month = _expected(month, today)
    by_today = _expected(today, today)
    assert {
        (c.carrier, c.currency): (c.month.amount, c.month.lines, c.month.unpriced)
        for c in shown.carriers
    } == by_month
    assert {
        (c.carrier, c.currency): (c.today.amount, c.today.lines, c.today.unpriced)
        for c in shown.carriers
        if c.today.lines
    } == by_today
    assert [(f.currency, f.amount, f.lines) for f in shown.month_totals] == [
        ("EUR", "3.00", 1),
        ("USD", "6.25", 5),  # 150 + 275 + 200; two passes unpriced
    ]
    assert [(f.currency, f.amount, f.lines, f.unpriced) for f in shown.today_totals] == [
        ("EUR", "3.00", 1, 0),
        ("USD", "4.25", 3, 1),
    ]

    # Each day's bar holds that day's priced passes, per carrier; nothing outside the plot.
    plotted: dict[tuple[str, str, str], int] = defaultdict(int)
    for chart in shown.charts:
        for column in chart.days:
            for segment in column.segments:
                plotted[(column.day.isoformat(), segment.carrier, chart.currency or "")] += (
                    segment.cents
                )
    wanted: dict[tuple[str, str, str], int] = defaultdict(int)
    first = today - timedelta(days=29)
    for line in LINES:
        day = line.ordered_at.date()
        if line.bought and line.cents and first <= day <= today:
            wanted[(day.isoformat(), line.carrier, PRODUCTS[line.carrier])] += line.cents
    assert plotted == wanted
    unpriced = {
        column.day.isoformat(): column.unpriced
        for chart in shown.charts
        for column in chart.days
        if column.unpriced
    }
    assert unpriced == {today.isoformat(): 1, "2030-03-01": 1}


def _page(tmp_path: Path, lines: list[Bought]) -> str:
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    _seed(settings.database_url, lines)
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]
    with offline_api(settings, app) as url, _signed_in(url) as http:
        page = http.get("/")
    assert page.status_code == 200, page.text
    return page.text


def test_the_fleet_page_shows_spend_cards_per_carrier_and_a_plot(tmp_path: Path) -> None:
    now = datetime.now(UTC)
    page = _page(
        tmp_path,
        [
            Bought("telna", now - timedelta(seconds=30), 150),
            Bought("telna", now - timedelta(seconds=20), None),
            Bought("esimgo", now - timedelta(seconds=10), 300),
        ],
    )
    cards = dict(
        re.findall(
            r'data-figure="spend_today" data-currency="(\w+)"><span class="n">([^<]*)</span>', page
        )
    )
    assert cards == {"USD": "1.50 USD", "EUR": "3.00 EUR"}
    assert re.search(r'data-figure="spend_month" data-currency="USD">.*2 passes, 1 unpriced', page)
    telna = re.search(r'<tr data-carrier="telna" data-currency="USD">(.*?)</tr>', page, re.S)
    assert telna is not None and 'data-figure="today">1.50<' in telna.group(1)
    for currency in ("USD", "EUR"):
        assert f'<svg class="spend-plot" id="spend-plot-{currency}"' in page
    assert re.search(r'data-carrier="telna" data-cents="150">', page)
    assert 'data-unpriced="1">?' in page
    assert 'id="spend-empty"' not in page and 'id="spend-plot-empty"' not in page


def test_an_empty_fleet_says_nothing_was_bought_never_a_plot_of_zeros(tmp_path: Path) -> None:
    page = _page(tmp_path, [])
    assert 'id="spend-empty"' in page and "nothing spent" in page
    assert 'id="spend-plot-empty"' in page
    assert '<svg class="spend-plot"' not in page
    assert 'data-figure="spend_today"' not in page


def test_a_figure_says_what_was_refunded_and_shows_the_net() -> None:
    """eSIM Go's refunded bundle: two passes bought, one credited back, 1.20 billed."""
    shown = figure(Tally("esimgo", "EUR", 120, 2, 0, refunded=120))
    assert (shown.amount, shown.passes) == ("1.20", "2 passes, net of 1.20 refunded")
    assert figure(Tally("telna", "USD", 150, 1, 0)).passes == "1 pass"
