"""The account-wide usage read in pages (``GetServiceDevices`` of every device with a
product, its ``DataUsage``) over real HTTP: what the usage poller reads from the
Webbing-like carrier."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest

from carriers.base import FleetUsage, LineUsage
from carriers.errors import CarrierUnavailable
from carriers.telna import TelnaCarrier
from carriers.webbing import WebbingCarrier
from models.identifiers import make_iccid
from simulators.webbing import create_app
from simulators.webbing_usage import UsageLag
from tests.servers import serve

USERNAME, PASSWORD, WSKEY = "pages-user", "pages-password", "pages-wskey"
_serial = itertools.count(1)


@pytest.fixture
async def sim() -> AsyncIterator[tuple[WebbingCarrier, httpx.AsyncClient]]:
    """A simulator of its own: the read covers the whole account."""
    app = create_app(USERNAME, PASSWORD, WSKEY, seed=3, usage_lag=UsageLag(compressed_seconds=0))
    with serve(app) as url:
        carrier = WebbingCarrier(url, USERNAME, PASSWORD, WSKEY, timeout=5.0)
        async with httpx.AsyncClient(base_url=f"{url}/_sim") as control:
            yield carrier, control
        await carrier.aclose()


async def _active_line(carrier: WebbingCarrier, control: httpx.AsyncClient) -> tuple[str, str]:
    iccid = make_iccid(f"8944{next(_serial) + 7_000_000:014d}")
    (await control.post("/esims", json={"iccids": [iccid]})).raise_for_status()
    line = await carrier.order(iccid, "9060", f"b-{iccid}:1")
    for _ in range(200):
        if (found := await carrier.activate(line.line_id)).status == "active":
            return iccid, found.line_id
        await asyncio.sleep(0.05)
    raise AssertionError("line never became active")


async def _read_all(carrier: FleetUsage, since: datetime, size: int) -> list[LineUsage]:
    read: list[LineUsage] = []
    page = 1
    while True:
        batch = await carrier.usage_page(page, since.date(), size)
        read += batch.usage
        if not batch.usage or page >= batch.pages:
            return read
        page += 1


async def test_every_line_of_the_account_is_read_once_page_by_page(
    sim: tuple[WebbingCarrier, httpx.AsyncClient],
) -> None:
    carrier, control = sim
    lines = [await _active_line(carrier, control) for _ in range(5)]
    busy_iccid, busy_line = lines[0]
    body = {"iccid": busy_iccid, "bytes_per_second": 2_000_000}
    (await control.post("/traffic", json=body)).raise_for_status()
    await asyncio.sleep(0.5)
    (
        await control.post("/traffic", json={"iccid": busy_iccid, "bytes_per_second": 0})
    ).raise_for_status()

    today = datetime.now(UTC)
    first = await carrier.usage_page(1, today.date(), 2)
    assert (first.page, first.pages, first.total, len(first.usage)) == (1, 3, 5, 2)
    read = await _read_all(carrier, today, 2)
    assert sorted(u.line_id for u in read) == sorted(line for _, line in lines)
    assert {u.iccid for u in read} == {iccid for iccid, _ in lines}
    busy = next(u for u in read if u.line_id == busy_line)
    assert 0 < busy.used_bytes <= busy.allowance_bytes == 6_000_000
    assert all(u.used_bytes == 0 for u in read if u.line_id != busy_line)
    assert (await carrier.usage_page(4, today.date(), 2)).usage == []

    # A device whose line ended (suspended: no product) is left out; the others stay in.
    await carrier.deactivate(busy_line)
    later = await _read_all(carrier, today, 500)
    assert sorted(u.line_id for u in later) == sorted(line for _, line in lines[1:])


async def test_a_page_size_over_the_carriers_limit_is_a_general_error(
    sim: tuple[WebbingCarrier, httpx.AsyncClient],
) -> None:
    carrier, _ = sim
    with pytest.raises(CarrierUnavailable, match="1000"):
        await carrier.usage_page(1, datetime.now(UTC).date(), 1001)


def test_only_a_carrier_with_a_paged_usage_read_offers_one() -> None:
    webbing = WebbingCarrier("http://127.0.0.1:9", USERNAME, PASSWORD, WSKEY)
    telna = TelnaCarrier("http://127.0.0.1:9", "key")
    assert isinstance(webbing, FleetUsage)
    assert not isinstance(telna, FleetUsage)
