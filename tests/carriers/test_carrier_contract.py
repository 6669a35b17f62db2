"""One scenario through every client against its simulator: the normalised results agree.

Telna speaks REST/JSON in bytes and epoch milliseconds, Webbing SOAP in MB and
``MM/dd/yyyy`` times, eSIM Go REST/JSON in bytes and RFC 3339 times with bundles that
queue on the eSIM; behind ``carriers.base.Carrier`` a fleet may mix them freely.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from carriers.base import Carrier, CarrierLine, CarrierProduct
from carriers.esimgo import EsimGoCarrier
from carriers.telna import TelnaCarrier
from carriers.webbing import WebbingCarrier
from models.identifiers import make_iccid
from simulators.esimgo import create_app as create_esimgo
from simulators.telna import create_app as create_telna
from simulators.webbing import create_app as create_webbing
from simulators.webbing_usage import UsageLag
from tests.servers import serve

# The same passes in each carrier's own ids: 1 MB for 10 s (at Telna one started through
# the API, as Webbing's are), and 3 MB for a 30 s UTC+8 day (eSIM Go's bundles all roll
# from their start: its 3 MB for 30 s).
SHORT = {"telna": "compressed-10s-manual", "webbing": "9010", "esimgo": "esim_1MB_10S_SIM"}
LOCAL_DAY = {"telna": "compressed-30s-utc8", "webbing": "9230", "esimgo": "esim_3MB_30S_SIM"}
_serial = itertools.count(1)


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, str]]:
    webbing = create_webbing("u", "p", "k", seed=3, usage_lag=UsageLag(compressed_seconds=0))
    esimgo = create_esimgo("esimgo-key", None, seed=3)
    with (
        serve(create_telna("telna-key", "", seed=3)) as telna_url,
        serve(webbing) as webbing_url,
        serve(esimgo) as esimgo_url,
    ):
        yield {"telna": telna_url, "webbing": webbing_url, "esimgo": esimgo_url}


@pytest.fixture
async def carriers(sims: dict[str, str]) -> AsyncIterator[dict[str, Carrier]]:
    clients: dict[str, Carrier] = {
        "telna": TelnaCarrier(sims["telna"], "telna-key"),
        "webbing": WebbingCarrier(sims["webbing"], "u", "p", "k"),
        "esimgo": EsimGoCarrier(f"{sims['esimgo']}/v2.4", "esimgo-key"),
    }
    yield clients
    for client in clients.values():
        await client.aclose()


def shape(line: CarrierLine) -> dict[str, Any]:
    """A line without what differs by nature (ids, exact times)."""
    window = None
    if line.activated_at is not None and line.ends_at is not None:
        window = (line.ends_at - line.activated_at).total_seconds()
    return {
        "status": line.status,
        "allowance_bytes": line.allowance_bytes,
        "used_bytes": line.used_bytes,
        "window_seconds": window,
        "ended": line.ended_at is not None,
    }


def product_shape(product: CarrierProduct) -> dict[str, Any]:
    """A product without what differs by nature (ids, names, prices, how the carrier
    moves to the next pass)."""
    return product.model_dump(exclude={"carrier_product_id", "name", "price_cents", "rotation"})


async def scenario(carrier: Carrier, sim_url: str) -> dict[str, Any]:
    """order → activate → usage → deactivate → find_lines, as the product would run it."""
    iccid = make_iccid(f"8944{next(_serial) + 9_000_000:014d}")
    seen: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=f"{sim_url}/_sim") as control:
        await control.post("/esims", json={"iccids": [iccid]})
        line = await carrier.order(iccid, SHORT[carrier.name], "bal_contract:1")
        seen["ordered"] = shape(line)
        seen["activating"] = shape(await carrier.activate(line.line_id))
        for _ in range(100):
            active = await carrier.get_line(line.line_id)
            if active.status == "active":
                break
            await asyncio.sleep(0.05)
        seen["active"] = shape(active)
        await control.post("/traffic", json={"iccid": iccid, "bytes_per_second": 10_000_000})
        await asyncio.sleep(0.3)  # 1 MB at 10 MB/s: used up after 0.1 s
        usage = await carrier.usage(line.line_id)
        seen["usage"] = (usage.line_id == active.line_id, usage.used_bytes, usage.allowance_bytes)
        await control.post("/traffic", json={"iccid": iccid, "bytes_per_second": 0})
        seen["deactivated"] = shape(await carrier.deactivate(line.line_id))
        found = await carrier.find_lines(iccid)
        seen["found"] = [(f.line_id == active.line_id, shape(f)) for f in found]
        entries = (await control.get("/ledger", params={"iccid": iccid})).json()["entries"]
        seen["ledger"] = [e["action"] for e in entries]
        # Where the carrier's API has a place for our reference it is kept; Telna's has none.
        assert {e["reference"] for e in entries} <= {"bal_contract:1", None}
    products = {p.carrier_product_id: p for p in await carrier.list_products()}
    seen["products"] = [product_shape(products[ids[carrier.name]]) for ids in (SHORT, LOCAL_DAY)]
    seen["rotations"] = [products[ids[carrier.name]].rotation for ids in (SHORT, LOCAL_DAY)]
    return seen


async def test_both_carriers_tell_the_same_story(
    carriers: dict[str, Carrier], sims: dict[str, str]
) -> None:
    telna, webbing = await asyncio.gather(
        scenario(carriers["telna"], sims["telna"]), scenario(carriers["webbing"], sims["webbing"])
    )
    rotations = telna.pop("rotations"), webbing.pop("rotations")
    assert rotations == (["activated", "queued"], ["in_place", "in_place"])
    # Telna keeps the package it ended; Webbing keeps no history: a device shows the
    # product on it now, and a suspended one none.
    assert webbing.pop("found") == []
    telna_found = telna.pop("found")
    # Telna ends a package whose data is used up (CARRIERS.md 2.6), so our deactivation
    # finds it ended; Webbing keeps the used-up product on the device until it is ended.
    assert telna.pop("ledger") == ["order", "activate", "exhaust", "expire"]
    assert webbing.pop("ledger") == ["order", "activate", "exhaust", "deactivate"]
    assert telna == webbing
    # ... and the story is the right one
    assert telna["ordered"] == {
        "status": "scheduled",
        "allowance_bytes": 1_000_000,
        "used_bytes": 0,
        "window_seconds": None,
        "ended": False,
    }
    assert telna["activating"]["status"] == "scheduled"
    assert telna["active"]["status"] == "active" and telna["active"]["window_seconds"] == 10
    assert telna["usage"] == (True, 1_000_000, 1_000_000)
    assert telna["deactivated"]["status"] == "ended" and telna["deactivated"]["ended"]
    assert telna_found == [(True, telna["deactivated"])]
    assert [(p["reset"], p["reset_utc_offset_minutes"]) for p in telna["products"]] == [
        ("rolling", 0),
        ("local_midnight", 480),
    ]


async def test_esimgo_tells_telnas_story_of_a_queued_bundle(
    carriers: dict[str, Carrier], sims: dict[str, str]
) -> None:
    """A bundle is ordered onto the eSIM and starts by itself (no start call: activating
    it reads it); its usage, its revoke and the eSIM's list read as Telna's package do."""
    telna, esimgo = await asyncio.gather(
        scenario(carriers["telna"], sims["telna"]), scenario(carriers["esimgo"], sims["esimgo"])
    )
    assert esimgo.pop("rotations") == ["queued", "queued"]
    # eSIM Go has no local-day bundle: its second lasts 30 s from its start.
    short, rolling = esimgo.pop("products")
    assert short == telna.pop("products")[0]
    assert (rolling["allowance_bytes"], rolling["validity_seconds"]) == (3_000_000, 30)
    assert (rolling["reset"], rolling["reset_utc_offset_minutes"]) == ("rolling", 0)
    # A revoked bundle ends when eSIM Go revoked it: its window is what it served, in
    # eSIM Go's whole seconds (0 when it started and was revoked within one second).
    revoked = esimgo.pop("deactivated")
    assert revoked["status"] == "ended" and revoked["ended"]
    assert revoked["used_bytes"] == revoked["allowance_bytes"] == 1_000_000
    assert revoked["window_seconds"] is not None and 0 <= revoked["window_seconds"] <= 10
    assert esimgo.pop("found") == [(True, revoked)]
    telna.pop("rotations"), telna.pop("deactivated"), telna.pop("found")
    # Telna ends a used-up package itself; a depleted eSIM Go bundle serves on, throttled,
    # until it is revoked.
    assert telna.pop("ledger") == ["order", "activate", "exhaust", "expire"]
    assert esimgo.pop("ledger") == ["order", "activate", "exhaust", "deactivate"]
    assert esimgo == telna
