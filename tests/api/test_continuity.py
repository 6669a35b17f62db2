"""Continuity figures over HTTP: the fleet report, a balance's figures, a bad ``since``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from models.db import init_db, session_scope
from models.tables import Balance, BalanceLine, Esim, LineEvent
from tests.api.conftest import OPERATOR_KEY, SERVICE_KEY, new_iccid, product
from tests.api.helpers import offline_api, offline_settings

T0 = datetime(2026, 1, 1, tzinfo=UTC)
WHOLE_LEDGER = T0.isoformat()  # every line here starts at or after it
AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _balance(session: Any, bid: str, carrier: str, closed: float | None) -> Balance:
    iccid = new_iccid()
    session.add(Esim(iccid=iccid, carrier=carrier))
    session.flush()
    row = Balance(
        id=bid,
        iccid=iccid,
        open_iccid=None if closed is not None else iccid,
        carrier=carrier,
        product_id=f"{carrier}-daily-1gb",
        state="Cancelled" if closed is not None else "Active",
        workflow_id=f"balance-{iccid}",
        created_at=T0,
        closed_at=at(closed) if closed is not None else None,
    )
    session.add(row)
    session.flush()
    return row


def _line(row: Balance, seq: int, start: float, end: float | None, **times: float) -> BalanceLine:
    return BalanceLine(
        balance_id=row.id,
        seq=seq,
        iccid=row.iccid,
        carrier=row.carrier,
        reference=f"{row.id}:{seq}",
        product_id=row.product_id,
        state="active" if end is None else "expired",
        allowance_bytes=1_000_000,
        activated_at=at(start),
        ended_at=at(end) if end is not None else None,
        **{name: at(t) for name, t in times.items()},
    )


def _activated(row: Balance, seq: int, when: float, reason: str) -> LineEvent:
    return LineEvent(
        key=f"{row.id}:{seq}:activated",
        balance_id=row.id,
        seq=seq,
        kind="activated",
        actor="workflow",
        at=at(when),
        detail={"reason": reason},
    )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Telna: an open balance with a 4 s gap, and an open balance with no line yet;
    Webbing: an open balance with an early rotation, and a closed one throttled 30 s (a
    used-up product in place serves on, throttled; a used-up Telna package has ended)."""
    settings = offline_settings(tmp_path_factory.mktemp("continuity"))
    init_db(settings.database_url)
    with session_scope(settings.database_url) as session:
        session.add(product("telna", "daily-1gb", 86_400))
        session.add(product("webbing", "daily-1gb", 86_400))
        gappy = _balance(session, "bal_gappy", "telna", None)
        throttled = _balance(session, "bal_throttled", "webbing", 100)
        early = _balance(session, "bal_early", "webbing", None)
        _balance(session, "bal_fresh", "telna", None)
        session.add_all(
            [
                _line(gappy, 1, 0, 60),
                _line(gappy, 2, 64, None),
                _activated(gappy, 2, 64, "time"),
                _line(throttled, 1, 0, 100, exhausted_at=70),
                _line(early, 1, 0, 32),
                _line(early, 2, 30, None),
                _activated(early, 2, 30, "usage"),
            ]
        )
    with offline_api(settings) as url:
        yield url


async def _get(url: str, path: str, **params: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        return await http.get(path, params=params, headers=AUTH)


async def test_fleet_report_sums_per_carrier(served: str) -> None:
    r = await _get(served, "/v1/continuity", since=WHOLE_LEDGER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert datetime.fromisoformat(body["since"]) == T0
    total, telna, webbing = body["total"], body["carriers"]["telna"], body["carriers"]["webbing"]
    assert total["balances"] == 4
    assert (total["gap_seconds"], total["throttled_seconds"]) == (4, 30)
    assert (total["rotations"], total["early_rotations"]) == (2, 1)
    assert total["overlap_seconds"] == 2
    assert (telna["balances"], telna["gap_seconds"], telna["gap_seconds_max"]) == (2, 4, 4)
    assert (webbing["balances"], webbing["early_rotations"], webbing["gap_seconds"]) == (2, 1, 0)
    assert (telna["throttled_seconds"], webbing["throttled_seconds"]) == (0, 30)


async def test_since_cuts_time_and_drops_balances_closed_before_it(served: str) -> None:
    r = await _get(served, "/v1/continuity", since="2026-01-01T00:01:02+00:00")
    assert r.status_code == 200, r.text
    body = r.json()
    assert datetime.fromisoformat(body["since"]) == at(62)
    total = body["total"]
    assert total["balances"] == 4  # the throttled one closed at 100 s, after the cut
    assert (total["gap_seconds"], total["throttled_seconds"]) == (2, 30)
    assert (total["rotations"], total["early_rotations"]) == (1, 0)
    naive = (await _get(served, "/v1/continuity", since="2026-01-01T00:01:42")).json()
    assert naive["total"]["balances"] == 3 and naive["total"]["throttled_seconds"] == 0


@pytest.mark.parametrize(
    "since",
    [
        "yesterday",
        "88177",
        "",
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "0001-01-01T00:00:00+01:00",
    ],
)
async def test_a_bad_since_is_refused_in_the_error_shape(served: str, since: str) -> None:
    r = await _get(served, "/v1/continuity", since=since)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["message"].startswith("query.since:")


async def test_any_key_may_read_and_none_may_not(served: str) -> None:
    async with httpx.AsyncClient(base_url=served, timeout=10) as http:
        service = await http.get(
            "/v1/continuity", headers={"Authorization": f"Bearer {SERVICE_KEY}"}
        )
        anonymous = await http.get("/v1/continuity")
    assert service.status_code == 200
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "unauthorized"


async def test_a_balance_carries_its_own_figures(served: str) -> None:
    whole = {"since": WHOLE_LEDGER}
    throttled = (await _get(served, "/v1/balances/bal_throttled", **whole)).json()["continuity"]
    assert throttled["measured_seconds"] == 100
    assert (throttled["throttled_seconds"], throttled["gap_seconds"]) == (30, 0)
    gappy = (await _get(served, "/v1/balances/bal_gappy", **whole)).json()["continuity"]
    assert (gappy["gap_seconds"], gappy["rotations"], gappy["early_rotations"]) == (4, 1, 0)
    assert gappy["measured_seconds"] > 1000  # open: measured until now
    early = (await _get(served, "/v1/balances/bal_early", **whole)).json()["continuity"]
    assert (early["overlap_seconds"], early["early_rotations"]) == (2, 1)
    fresh = await _get(served, "/v1/balances/bal_fresh", **whole)
    assert fresh.status_code == 200 and fresh.json()["continuity"] is None


async def test_without_since_the_figures_cover_the_last_day(served: str) -> None:
    asked = datetime.now(UTC)
    body = (await _get(served, "/v1/continuity")).json()
    since = datetime.fromisoformat(body["since"]) + timedelta(hours=24)
    assert asked <= since < asked + timedelta(seconds=5)
    total = body["total"]
    assert total["balances"] == 3  # the throttled one closed long before the day
    # Two lines serving all day long: no gap, no rotation in the day.
    assert total["measured_seconds"] == pytest.approx(2 * 86_400, abs=10)
    assert (total["gap_seconds"], total["rotations"], total["overlap_seconds"]) == (0, 0, 0)
    gappy = (await _get(served, "/v1/balances/bal_gappy")).json()
    assert datetime.fromisoformat(gappy["continuity_since"]) >= since - timedelta(hours=24)
    assert gappy["continuity"]["measured_seconds"] == pytest.approx(86_400, abs=10)
    assert (gappy["continuity"]["gap_seconds"], gappy["continuity"]["rotations"]) == (0, 0)
    throttled = (await _get(served, "/v1/balances/bal_throttled")).json()["continuity"]
    assert throttled["measured_seconds"] == 0  # closed before the day: nothing to measure
