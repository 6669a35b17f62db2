"""The dashboard over a balance with a long history: figures of the last day, lines a page
at a time, and the carrier's lines of older pages not taken for strangers."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from api.app import create_app
from api.dashboard import esim as esim_view
from api.dashboard.esim import CarrierView
from carriers.base import CarrierLine
from models.continuity import Continuity
from models.db import init_db, session_scope
from models.tables import Balance, BalanceLine, Esim
from tests.api.conftest import OPERATOR_KEY, new_iccid, product
from tests.api.helpers import NoTemporal, offline_api, offline_settings

HOUR = timedelta(hours=1)
LINES = 60


def _line(balance: Balance, seq: int, start: datetime, end: datetime | None) -> BalanceLine:
    return BalanceLine(
        balance_id=balance.id,
        seq=seq,
        iccid=balance.iccid,
        carrier=balance.carrier,
        reference=f"{balance.id}:{seq}",
        product_id=balance.product_id,
        state="active" if end is None else "expired",
        allowance_bytes=1_000_000,
        ordered_at=start - timedelta(minutes=5),
        activated_at=start,
        ends_at=start + HOUR,
        ended_at=end,
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """An open balance of 60 hourly lines up to now: a 30 s gap two days ago (before the
    day shown) and a 10 s gap two hours ago."""
    settings = offline_settings(tmp_path_factory.mktemp("long"))
    init_db(settings.database_url)
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - (LINES - 1) * HOUR - timedelta(minutes=30)
    iccid = new_iccid()
    with session_scope(settings.database_url) as session:
        session.add(product("telna", "hourly", 3600))
        session.add(Esim(iccid=iccid, carrier="telna"))
        session.flush()
        balance = Balance(
            id="bal_long0000000",
            iccid=iccid,
            open_iccid=iccid,
            carrier="telna",
            product_id="telna-hourly",
            workflow_id=f"balance-{iccid}",
            created_at=first - HOUR,
        )
        session.add(balance)
        session.flush()
        start = first
        for seq in range(1, LINES + 1):
            end = None if seq == LINES else start + HOUR
            session.add(_line(balance, seq, start, end))
            gap = {LINES - 48: 30, LINES - 2: 10}.get(seq, 0)
            start = start + HOUR + timedelta(seconds=gap)
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]
    app.state.carrier_lines = Unread()
    with offline_api(settings, app) as url:
        yield url, iccid


class Unread:
    """The carrier's lines as a page gets them when no worker could read the carrier."""

    async def view(self, client: object, carrier: str, iccid: str) -> CarrierView:
        return CarrierView(error="CarrierUnavailable: telna: unreadable")


@contextmanager
def _signed_in(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url, timeout=20) as http:
        answer = http.post("/dashboard/signin", data={"api_key": OPERATOR_KEY})
        assert answer.status_code == 303, answer.text
        yield http


def _figure(page: str, name: str) -> float:
    found = re.search(rf'data-figure="{name}"><span class="n">([0-9.]+)<', page)
    assert found, name
    return float(found.group(1))


def _listed(page: str) -> list[int]:
    return [int(seq) for seq in re.findall(r'<tr data-seq="([0-9]+)"', page)]


def test_the_fleet_shows_the_gaps_of_the_last_day_only(served: tuple[str, str]) -> None:
    url, _ = served
    with _signed_in(url) as http:
        page = http.get("/")
    assert page.status_code == 200, page.text
    assert _figure(page.text, "gap_seconds") == 10.0
    assert "gap s, 24 h" in page.text


def test_an_esim_lists_its_lines_a_page_at_a_time(served: tuple[str, str]) -> None:
    url, iccid = served
    with _signed_in(url) as http:
        first = http.get(f"/dashboard/esims/{iccid}")
        assert first.status_code == 200, first.text
        assert _figure(first.text, "gap_seconds") == 10.0
        assert _listed(first.text) == list(range(LINES, LINES - esim_view.LINES_LISTED, -1))
        older = re.search(r'href="([^"]+)" id="older-lines"', first.text)
        assert older is not None
        second = http.get(older.group(1).replace("&amp;", "&"))
        assert second.status_code == 200, second.text
        assert _listed(second.text) == list(range(LINES - esim_view.LINES_LISTED, 0, -1))
        assert 'id="older-lines"' not in second.text
        # The time axis keeps the newest lines whichever page the table shows.
        drawn = set(
            re.findall(
                r'rect class="bar [^"]*" [^>]*data-side="ours" data-seq="(\d+)"', second.text
            )
        )
        assert drawn == {str(seq) for seq in range(LINES - 11, LINES + 1)}
        foreign = http.get(f"/dashboard/esims/{iccid}", params={"lines": "bm90LW91cnM"})
        assert foreign.status_code == 422 and "invalid_cursor" in foreign.text


def test_a_carrier_line_of_an_older_page_is_not_shown_as_unknown() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    balance = Balance(
        id="bal_x",
        iccid="8944000000000000001",
        carrier="telna",
        product_id="telna-hourly",
        workflow_id="balance-x",
        created_at=now - 10 * HOUR,
    )
    ours = [_line(balance, seq, now - (4 - seq) * HOUR, None) for seq in (1, 2, 3)]

    def theirs(line: BalanceLine) -> CarrierLine:
        return CarrierLine(
            line_id=f"pkg-{line.seq}",
            iccid=balance.iccid,
            carrier_product_id="hourly",
            reference=line.reference,
            status="active",
            ordered_at=line.ordered_at or now,
            activated_at=line.activated_at,
            allowance_bytes=1_000_000,
        )

    stranger = theirs(ours[0]).model_copy(update={"line_id": "pkg-x", "reference": "other:1"})
    view = CarrierView([*(theirs(line) for line in ours), stranger])
    references = {line.reference for line in ours}
    plan = esim_view.layout(balance, ours, view, references, now)
    listed, older = ours[1:], ours[:1]
    shown = esim_view.build(balance, plan, listed, older, [], Continuity(), view, now)
    assert [(row.seq, row.problem) for row in shown.rows] == [
        (None, "at the carrier, unknown to us"),
        (3, None),
        (2, None),
    ]
