"""The simulators' slow commit (``commit_delay_ms``): a request that changes state takes
effect that long after it arrived, even when the client has given up on it, and only
then is answered; reads answer at once. Our clients read the timeout as an unknown
outcome. And a carrier that lists only an ICCID's recent packages (``list_limit``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from carriers.base import Carrier
from carriers.errors import CarrierOutcomeUnknown
from carriers.telna import TelnaCarrier
from carriers.webbing import WebbingCarrier
from models.identifiers import make_iccid
from simulators.telna import create_app as create_telna
from simulators.webbing import create_app as create_webbing
from tests.servers import serve

DELAY = 0.8
TIMEOUT = 0.3
WEBBING = ("sim-user", "sim-password", "sim-wskey")
PRODUCT = {"telna": "compressed-600s", "webbing": "9030"}


@pytest.fixture(params=["telna", "webbing"])
async def carrier(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Carrier, str]]:
    telna = request.param == "telna"
    with serve(create_telna("key", "secret") if telna else create_webbing(*WEBBING)) as url:
        client: Carrier = (
            TelnaCarrier(url, "key", timeout=TIMEOUT)
            if telna
            else WebbingCarrier(url, *WEBBING, timeout=TIMEOUT)
        )
        try:
            yield client, url
        finally:
            await client.aclose()


async def test_a_slow_commit_takes_effect_after_the_client_gave_up(
    carrier: tuple[Carrier, str],
) -> None:
    client, url = carrier
    iccid = make_iccid("894400000000777001")
    async with httpx.AsyncClient(base_url=url) as control:
        await control.post("/_sim/esims", json={"iccids": [iccid]})
        await control.post("/_sim/faults", json={"commit_delay_ms": DELAY * 1000})
        sent = time.monotonic()
        with pytest.raises(CarrierOutcomeUnknown):
            await client.order(iccid, PRODUCT[client.name], "bal_x:1")
        # Not committed yet, and the read is not delayed.
        assert await client.find_lines(iccid) == []
        assert time.monotonic() - sent < DELAY
        await asyncio.sleep(DELAY - (time.monotonic() - sent) + 0.3)
        for _ in range(40):  # a product change takes effect after the activation latency
            if found := await client.find_lines(iccid):
                break
            await asyncio.sleep(0.1)
        [line] = found
        assert line.carrier_product_id == PRODUCT[client.name]
        ledger = (await control.get("/_sim/ledger")).json()["entries"]
        assert [e["action"] for e in ledger if e["action"] == "order"] == ["order"]
        report = (await control.get("/_sim/faults")).json()
        assert report["commit_delay_ms"] == DELAY * 1000
        assert report["injected"]["commit_delay"] == 1
        await control.post("/_sim/faults", json={})


@pytest.mark.parametrize("carrier", ["telna"], indirect=True)  # Webbing: a product a device
async def test_a_carrier_may_list_only_an_iccids_newest_packages(
    carrier: tuple[Carrier, str],
) -> None:
    client, url = carrier
    iccid = make_iccid("894400000000777002")
    async with httpx.AsyncClient(base_url=url) as control:
        await control.post("/_sim/esims", json={"iccids": [iccid]})
        ordered = [
            (await client.order(iccid, PRODUCT[client.name], f"bal_x:{seq}")).line_id
            for seq in range(1, 5)
        ]
        config = await control.post("/_sim/config", json={"list_limit": 2})
        assert config.json()["list_limit"] == 2
        assert [line.line_id for line in await client.find_lines(iccid)] == ordered[2:]
        await control.post("/_sim/config", json={"list_limit": None})
        assert len(await client.find_lines(iccid)) == 4
