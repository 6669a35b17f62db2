"""The eSIM Go-like simulator over real HTTP: auth, catalogue, orders, inventory, applies,
bundle states, queueing and the 30 cap."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from simulators.esimgo import create_app
from tests.servers import serve
from tests.simulators.esimgo_calls import (
    API_KEY,
    DAILY,
    TEN_S,
    THIRTY_S,
    V,
    assign,
    assignments,
    enrolled,
    ledger,
    states,
    wait_for,
)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    app = create_app(API_KEY, seed=5, activation_latency=(0.2, 0.2), rate_limit_tokens=None)
    with serve(app) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, headers={"X-API-Key": API_KEY}) as client:
        yield client
        await client.post("/_sim/faults", json={})
        await client.post("/_sim/esimgo", json={"refunds_enabled": False, "balance": 10_000})


async def test_a_missing_or_wrong_key_is_forbidden_and_the_header_name_is_any_case(
    sim_url: str,
) -> None:
    async with httpx.AsyncClient(base_url=sim_url) as anon:
        for headers in ({}, {"X-API-Key": "wrong"}):
            response = await anon.get(f"{V}/catalogue", headers=headers)
            assert (response.status_code, response.json()) == (403, {"message": "Forbidden"})
        for version in ("/v2.4", "/v2.5"):
            ok = await anon.get(f"{version}/catalogue", headers={"x-api-key": API_KEY})
            assert ok.status_code == 200
        missing = await anon.get(f"{V}/nowhere", headers={"X-API-Key": API_KEY})
        assert missing.status_code == 404 and "message" in missing.json()


async def test_catalogue_pages_and_names_bundles_as_the_control_api_does(
    sim: httpx.AsyncClient,
) -> None:
    page = (await sim.get(f"{V}/catalogue", params={"page": 2, "perPage": 3})).json()
    assert page["pageSize"] == 3 and page["rows"] >= 10 and len(page["bundles"]) == 3
    assert page["pageCount"] == -(-page["rows"] // 3)
    daily = (await sim.get(f"{V}/catalogue/{DAILY}")).json()
    assert daily["dataAmount"] == 1000 and daily["duration"] == 1
    assert daily["countries"][0]["iso"] == "GB" and daily["price"] == 1.5
    assert {"groups", "speed", "autostart", "unlimited", "billingType"} <= daily.keys()
    ten = (await sim.get(f"{V}/catalogue/{TEN_S}")).json()
    assert (ten["dataAmount"], ten["durationSeconds"]) == (1, 10)
    unknown = await sim.get(f"{V}/catalogue/esim_1gb_1d_gb_v2")  # names are case-sensitive
    assert unknown.status_code == 400 and "message" in unknown.json()
    products = (await sim.get("/_sim/products")).json()["products"]
    by_id = {p["id"]: p for p in products}
    assert by_id[TEN_S]["allowance_bytes"] == 1_000_000
    assert by_id[TEN_S]["validity_seconds"] == 10


async def test_validate_charges_nothing_and_a_transaction_buys_into_the_inventory(
    sim: httpx.AsyncClient,
) -> None:
    before = (await sim.get("/_sim/esimgo")).json()
    flat = {"type": "validate", "quantity": 2, "item": THIRTY_S}
    checked = (await sim.post(f"{V}/orders", json=flat)).json()
    assert checked["valid"] is True and checked["total"] == 0.02
    assert checked["runningBalance"] == before["balance"]
    assert (await sim.get("/_sim/esimgo")).json() == before
    bought = (await sim.post(f"{V}/orders", json={**flat, "type": "transaction"})).json()
    assert bought["orderReference"] and bought["currency"] == "USD"
    assert bought["runningBalance"] == round(before["balance"] - 0.02, 2)
    line = bought["order"][0]
    assert (line["item"], line["quantity"], line["pricePerUnit"], line["iccids"]) == (
        THIRTY_S,
        2,
        0.01,
        [],
    )
    stock = (await sim.get(f"{V}/inventory")).json()["bundles"]
    assert {"name": THIRTY_S, "available": before["inventory"].get(THIRTY_S, 0) + 2}.items() <= {
        b["name"]: b for b in stock
    }[THIRTY_S].items()
    refunded = await sim.post(f"{V}/inventory/refund", json={"name": THIRTY_S, "quantity": 1})
    assert refunded.status_code == 200
    assert refunded.json()["runningBalance"] == round(before["balance"] - 0.01, 2)


async def test_an_order_onto_an_iccid_is_processed_then_starts_as_the_ledger_shows(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    bought = await assign(sim, iccid, DAILY)
    line = bought["order"][0]
    assert line["iccids"] == [iccid] and line["esims"][0]["iccid"] == iccid
    assert bought["assigned"] is True and bought["status"] == "Completed"
    [(action, assignment_id)] = await ledger(sim, iccid)
    assert action == "order"
    [first] = await assignments(sim, iccid, used=False)
    assert first["id"] == assignment_id and first["bundleState"] == "processing"
    assert first["assignmentReference"] == f"{bought['orderReference']}-0"
    assert first["initialQuantity"] == first["remainingQuantity"] == 1_000_000_000
    assert "startTime" not in first and first["assignmentDateTime"].endswith("Z")

    async def active() -> bool:
        return (await states(sim, iccid)) == {assignment_id: "active"}

    await wait_for(active)
    status = (await sim.get(f"{V}/esims/{iccid}/bundles/{DAILY}")).json()
    [started] = status["assignments"]
    assert status["name"] == DAILY and started["startTime"].endswith("Z")
    assert await ledger(sim, iccid) == [("order", assignment_id), ("activate", assignment_id)]
    entries = (await sim.get("/_sim/ledger", params={"iccid": iccid})).json()["entries"]
    assert all(e["reference"] is None and e["product_id"] == DAILY for e in entries)
    # The order is billed as its answer said: its total, in the account's currency.
    assert (entries[0]["price_cents"], entries[0]["currency"]) == (150, "USD")
    assert bought["total"] == 1.5 and bought["currency"] == "USD"
    assert (entries[1]["price_cents"], entries[1]["currency"]) == (None, None)


async def test_orders_are_refused_by_the_records_rules_and_change_nothing(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    line = {"type": "bundle", "quantity": 1, "item": DAILY}
    cases = [
        ({"assign": False, "order": [{**line, "iccids": [iccid]}]}, 400),
        ({"assign": True, "order": [{**line, "quantity": 2, "iccids": [iccid]}]}, 400),
        ({"assign": True, "order": [line]}, 400),  # new eSIMs: no stock here
        ({"assign": True, "order": [{**line, "item": "esim_nope", "iccids": [iccid]}]}, 400),
        ({"assign": True, "order": [{**line, "iccids": ["8944000000000000000"]}]}, 403),
        ({"assign": True}, 400),
        ({"assign": True, "order": [line], "surprise": 1}, 400),
    ]
    for body, status in cases:
        response = await sim.post(f"{V}/orders", json={"type": "transaction", **body})
        assert response.status_code == status, (body, response.text)
        assert set(response.json()) == {"message"}
    assert await ledger(sim, iccid) == []


async def test_apply_takes_bundles_from_the_inventory_only(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    empty = await sim.post(f"{V}/esims/apply", json={"iccid": iccid, "bundle": "esim_1GB_7D_IM_U"})
    assert empty.status_code == 403
    assert empty.json() == {"message": "the user does not have any available Bundles left"}
    await sim.post(f"{V}/orders", json={"type": "transaction", "quantity": 2, "item": TEN_S})
    for bad in (
        {"bundle": TEN_S},  # a new eSIM: no stock here
        {"iccid": iccid, "bundle": TEN_S, "bundles": [TEN_S]},
        {"iccid": iccid, "bundle": TEN_S, "repeat": 2},
        {"iccid": iccid, "bundle": TEN_S, "startTime": "tomorrow"},
    ):
        assert (await sim.post(f"{V}/esims/apply", json=bad)).status_code == 400, bad
    applied = await sim.post(f"{V}/esims/apply", json={"iccid": iccid, "bundles": [TEN_S, TEN_S]})
    assert applied.status_code == 200, applied.text
    esims = applied.json()["esims"]
    assert [(e["iccid"], e["bundle"]) for e in esims] == [(iccid, TEN_S)] * 2
    assert esims[0]["applyReference"] and esims[0]["status"]
    assert [a for a, _ in await ledger(sim, iccid)][:2] == ["order", "order"]


async def test_a_depleted_bundle_hands_over_to_the_next_queued_at_once(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await assign(sim, iccid, TEN_S, quantity=2)
    first, second = [pid for action, pid in await ledger(sim, iccid) if action == "order"]
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 4_000_000})

    async def handed_over() -> bool:
        found = await states(sim, iccid)
        return found == {first: "depleted", second: "depleted"}

    await wait_for(handed_over)
    actions = await ledger(sim, iccid)
    assert ("exhaust", first) in actions and ("activate", second) in actions
    timeline = (await sim.get(f"/_sim/timeline/{iccid}")).json()["intervals"]
    assert [i["state"] for i in timeline] == ["high_speed", "throttled"]
    current = await assignments(sim, iccid, used=False)
    assert current == []  # depleted bundles are listed with includeUsed only
    listed = await sim.get(f"{V}/esims/{iccid}/bundles", params={"limit": 201})
    assert listed.status_code == 400


async def test_up_to_30_bundles_queue_on_an_esim(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    line = {"type": "bundle", "item": DAILY}
    too_many = {
        "type": "transaction",
        "assign": True,
        "order": [{**line, "quantity": 31, "iccids": [iccid] * 31}],
    }
    assert (await sim.post(f"{V}/orders", json=too_many)).status_code == 400
    assert await ledger(sim, iccid) == []
    await assign(sim, iccid, DAILY, quantity=30)

    async def one_started() -> bool:
        return "active" in (await states(sim, iccid)).values()

    await wait_for(one_started)
    await assign(sim, iccid, DAILY)  # 29 queued, one more fits
    refused = await sim.post(
        f"{V}/orders",
        json={
            "type": "validate",
            "assign": True,
            "order": [{**line, "quantity": 1, "iccids": [iccid]}],
        },
    )
    assert refused.status_code == 400 and "30" in refused.json()["message"]
    default = (await sim.get(f"{V}/esims/{iccid}/bundles")).json()["bundles"]
    assert sum(len(b["assignments"]) for b in default) == 15  # limit defaults to 15
