"""Reading: eSIMs, the catalogue, balances with their lines, pages and filters."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from api.pagination import encode_seq
from models.db import init_db, session_scope
from models.tables import Balance, BalanceLine, Esim
from tests.api.conftest import Api, new_iccid, product, valid_eid
from tests.api.helpers import offline_api, offline_settings

T0 = datetime(2030, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Balance]]]:
    """An offline API over 9 balances: 3 share one created_at, 2 are webbing, 2 cancelled."""
    settings = offline_settings(tmp_path_factory.mktemp("reads"))
    init_db(settings.database_url)
    balances: list[Balance] = []
    with session_scope(settings.database_url) as session:
        session.add(product("telna", "daily-1gb", 86_400))
        session.add(product("webbing", "1042", 86_400))
        session.add(product("esimgo", "esim_1GB_1D_GB_V2", 86_400))
        for n in range(9):
            carrier = "webbing" if n in (2, 5) else "telna"
            iccid = new_iccid()
            session.add(Esim(iccid=iccid, carrier=carrier))
            session.flush()
            balance = Balance(
                id=f"bal_{n:012x}",
                iccid=iccid,
                open_iccid=None if n in (1, 6) else iccid,
                carrier=carrier,
                product_id=f"{carrier}-daily-1gb",
                state="Cancelled" if n in (1, 6) else "Active",
                workflow_id=f"balance-{iccid}",
                created_at=T0 + timedelta(seconds=min(n, 3)),  # 3..8 share one instant
            )
            session.add(balance)
            balances.append(balance)
        session.flush()
        for seq in (1, 2):
            session.add(
                BalanceLine(
                    balance_id=balances[0].id,
                    seq=seq,
                    iccid=balances[0].iccid,
                    carrier="telna",
                    reference=f"{balances[0].id}:{seq}",
                    product_id="telna-daily-1gb",
                    state="expired" if seq == 1 else "active",
                    allowance_bytes=1_000_000,
                    activated_at=T0,
                )
            )
    newest_first = sorted(balances, key=lambda b: (b.created_at, b.id), reverse=True)
    with offline_api(settings) as url:
        yield url, newest_first


def _pages(url: str, **params: str) -> list[str]:
    ids: list[str] = []
    cursor: str | None = None
    while True:
        query = params | ({"cursor": cursor} if cursor else {}) | {"limit": "2"}
        page = httpx.get(f"{url}/v1/balances", params=query, headers=Api.auth("service"))
        assert page.status_code == 200, page.text
        ids += [b["id"] for b in page.json()["data"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return ids


def test_pages_follow_the_cursor_through_every_balance_once(
    served: tuple[str, list[Balance]],
) -> None:
    url, newest_first = served
    assert _pages(url) == [b.id for b in newest_first]


def test_filters_by_state_and_carrier_page_too(served: tuple[str, list[Balance]]) -> None:
    url, newest_first = served
    assert _pages(url, state="Cancelled") == [b.id for b in newest_first if b.state == "Cancelled"]
    assert _pages(url, carrier="webbing") == [b.id for b in newest_first if b.carrier == "webbing"]
    assert _pages(url, state="Active", carrier="webbing") == [
        b.id for b in newest_first if b.carrier == "webbing" and b.state == "Active"
    ]
    assert _pages(url, state="Paused") == []


def test_a_balance_comes_with_its_lines_newest_first(served: tuple[str, list[Balance]]) -> None:
    url, newest_first = served
    oldest = newest_first[-1]
    body = httpx.get(f"{url}/v1/balances/{oldest.id}", headers=Api.auth("service")).json()
    assert body["id"] == oldest.id and body["state"] == "Active"
    assert [(line["seq"], line["state"]) for line in body["lines"]] == [
        (2, "active"),
        (1, "expired"),
    ]
    assert body["lines"][0]["id"] == f"{oldest.id}:2"
    assert body["continuity"]["gap_seconds"] == 0  # its lines start in the future
    assert body["policy"]["switch_fraction"] == 0.95


def test_a_balances_lines_page_by_the_cursor(served: tuple[str, list[Balance]]) -> None:
    url, newest_first = served
    oldest = newest_first[-1].id

    def page(**params: str) -> httpx.Response:
        return httpx.get(f"{url}/v1/balances/{oldest}", params=params, headers=Api.auth("service"))

    first = page(limit="1").json()
    assert [line["seq"] for line in first["lines"]] == [2] and first["next_cursor"]
    second = page(limit="1", cursor=first["next_cursor"]).json()
    assert [line["seq"] for line in second["lines"]] == [1] and second["next_cursor"] is None
    balances_cursor = httpx.get(
        f"{url}/v1/balances", params={"limit": "1"}, headers=Api.auth("service")
    ).json()["next_cursor"]
    for cursor in (balances_cursor, "bm90LWEtY3Vyc29y", encode_seq(2**31)):
        refused = page(cursor=cursor)
        assert refused.status_code == 422 and refused.json()["error"]["code"] == "invalid_cursor"
    assert page(limit="0").status_code == 422 and page(limit="201").status_code == 422


def test_an_esim_shows_its_open_balance(served: tuple[str, list[Balance]]) -> None:
    url, newest_first = served
    open_one = next(b for b in newest_first if b.open_iccid)
    closed = next(b for b in newest_first if not b.open_iccid)
    shown = httpx.get(f"{url}/v1/esims/{open_one.iccid}", headers=Api.auth("service")).json()
    assert shown["id"] == open_one.iccid and shown["open_balance"]["id"] == open_one.id
    shown = httpx.get(f"{url}/v1/esims/{closed.iccid}", headers=Api.auth("service")).json()
    assert shown["open_balance"] is None


def test_the_catalogue_lists_and_filters(served: tuple[str, list[Balance]]) -> None:
    url, _ = served
    every = httpx.get(f"{url}/v1/products", headers=Api.auth("service")).json()
    assert every["count"] == 3 and sorted(p["id"] for p in every["data"]) == [
        "esimgo-esim_1GB_1D_GB_V2",
        "telna-daily-1gb",
        "webbing-1042",
    ]
    webbing = httpx.get(
        f"{url}/v1/products", params={"carrier": "webbing"}, headers=Api.auth("service")
    ).json()
    assert [p["id"] for p in webbing["data"]] == ["webbing-1042"]
    esimgo = httpx.get(
        f"{url}/v1/products", params={"carrier": "esimgo"}, headers=Api.auth("service")
    ).json()
    assert [(p["id"], p["carrier"]) for p in esimgo["data"]] == [
        ("esimgo-esim_1GB_1D_GB_V2", "esimgo")
    ]


def test_an_esim_registers_with_each_carrier(tmp_path: Path) -> None:
    with offline_api(offline_settings(tmp_path)) as url:
        for carrier in ("telna", "webbing", "esimgo"):
            body = {"iccid": new_iccid(), "carrier": carrier}
            answer = httpx.post(f"{url}/v1/esims", json=body, headers=Api.auth("service"))
            assert answer.status_code == 201, answer.text
            assert answer.json()["carrier"] == carrier


def test_registering_an_esim_again_is_harmless(tmp_path: Path) -> None:
    iccid, eid = new_iccid(), valid_eid()
    with offline_api(offline_settings(tmp_path)) as url:

        def post(body: dict[str, str]) -> httpx.Response:
            return httpx.post(f"{url}/v1/esims", json=body, headers=Api.auth("service"))

        first = post({"iccid": iccid, "carrier": "telna"})
        assert first.status_code == 201 and first.json()["eid"] is None
        with_eid = post({"iccid": iccid, "carrier": "telna", "eid": eid})
        assert with_eid.status_code == 200 and with_eid.json()["eid"] == eid
        assert post({"iccid": iccid, "carrier": "telna"}).status_code == 200
        other = post({"iccid": iccid, "carrier": "telna", "eid": valid_eid()})
        assert other.status_code == 409 and other.json()["error"]["code"] == "esim_conflict"
