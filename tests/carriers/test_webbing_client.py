"""WebbingCarrier over real HTTP: shapes against the simulator, error mapping against stubs."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pydantic import SecretStr

from carriers import build_carriers
from carriers.base import CarrierLine
from carriers.errors import CarrierOutcomeUnknown, CarrierRejected, CarrierUnavailable
from carriers.webbing import WebbingCarrier
from config import Settings, TelnaSettings, WebbingSettings
from models.identifiers import make_iccid
from ports import free_port
from simulators.webbing import CATALOGUE, create_app
from simulators.webbing_usage import UsageLag
from tests.servers import serve

USERNAME, PASSWORD, WSKEY = "client-user", "client-password", "client-wskey"
_serial = itertools.count(1)


def new_iccid() -> str:
    return make_iccid(f"8944{next(_serial) + 8_000_000:014d}")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    lag = UsageLag(compressed_seconds=0)
    with serve(create_app(USERNAME, PASSWORD, WSKEY, seed=5, usage_lag=lag)) as url:
        yield url


@pytest.fixture
async def control(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{sim_url}/_sim") as client:
        yield client
        await client.post("/faults", json={})


def client(url: str, **options: float) -> WebbingCarrier:
    return WebbingCarrier(url, USERNAME, PASSWORD, WSKEY, **options)  # type: ignore[arg-type]


@pytest.fixture
async def webbing(sim_url: str) -> AsyncIterator[WebbingCarrier]:
    carrier = client(sim_url, timeout=2.0)
    yield carrier
    await carrier.aclose()


async def enrolled(control: httpx.AsyncClient) -> str:
    iccid = new_iccid()
    await control.post("/esims", json={"iccids": [iccid]})
    return iccid


async def until_active(webbing: WebbingCarrier, line_id: str) -> CarrierLine:
    for _ in range(100):
        line = await webbing.get_line(line_id)
        if line.status == "active":
            return line
        await asyncio.sleep(0.05)
    raise AssertionError("line never became active")


def change(iccid: str, product_id: str) -> dict[str, object]:
    """The parameters of the product change an order makes."""
    return {"ServiceDeviceIdentifier": {"ICCID": iccid}, "ProductID": product_id}


async def orders(control: httpx.AsyncClient, iccid: str) -> list[str | None]:
    """The references of the purchases the carrier's ledger holds for ``iccid``."""
    entries = (await control.get("/ledger", params={"iccid": iccid})).json()["entries"]
    return [e["reference"] for e in entries if e["action"] == "order"]


async def test_a_pass_is_bought_in_place_and_replaced_by_the_next(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    first = await webbing.order(iccid, "9030", "bal-1:1")
    assert (first.status, first.reference, first.iccid) == ("scheduled", None, iccid)
    assert abs(first.ordered_at - datetime.now(UTC)) < timedelta(seconds=5)
    active = await until_active(webbing, first.line_id)
    assert active.line_id != first.line_id  # named by when it took effect, from now on
    assert active.activated_at is not None and active.ends_at is not None
    assert active.ends_at - active.activated_at == timedelta(seconds=30)
    assert (await webbing.get_line(first.line_id)).line_id == active.line_id

    await control.post("/traffic", json={"iccid": iccid, "bytes_per_second": 1_000_000})
    await asyncio.sleep(0.5)
    usage = await webbing.usage(active.line_id)
    assert usage.line_id == active.line_id and 0 < usage.used_bytes <= 3_000_000
    await control.post("/traffic", json={"iccid": iccid, "bytes_per_second": 0})

    # The same product again renews it: a second purchase, replacing the first in place.
    second = await until_active(webbing, (await webbing.order(iccid, "9030", "bal-1:2")).line_id)
    replaced = await webbing.get_line(active.line_id)
    assert (replaced.status, replaced.ended_at) == ("ended", second.activated_at)
    assert [line.line_id for line in await webbing.find_lines(iccid)] == [second.line_id]
    assert await webbing.open_lines(iccid, "9030") == await webbing.find_lines(iccid)
    assert await webbing.open_lines(iccid, "9060") == []
    assert await orders(control, iccid) == [None, None]  # no place for our reference


async def test_ending_a_line_suspends_the_device_and_the_next_purchase_resumes_it(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    line = await until_active(webbing, (await webbing.order(iccid, "9060", "bal-2:1")).line_id)
    ended = await webbing.deactivate(line.line_id)
    assert ended.status == "ended" and ended.ended_at is not None
    assert (await webbing.deactivate(line.line_id)).status == "ended"  # idempotent
    assert await webbing.find_lines(iccid) == []
    again = await webbing.order(iccid, "9060", "bal-2:2")
    assert (await until_active(webbing, again.line_id)).status == "active"


async def test_products_carry_validity_reset_rules_and_prices(webbing: WebbingCarrier) -> None:
    products = {p.carrier_product_id: p for p in await webbing.list_products()}
    assert {"1042", "9010", "9030", "9060", "9600", "9130", "9230"} <= set(products)
    daily = products["1042"]
    assert (daily.allowance_bytes, daily.validity_seconds, daily.reset) == (
        10**9,
        86_400,
        "rolling",
    )
    assert (daily.throttle_kbps, daily.price_cents, daily.rotation) == (128, 150, "in_place")
    assert products["9030"].validity_seconds == 30
    assert products["9600"].validity_seconds == 600
    assert (products["1044"].reset, products["1044"].reset_utc_offset_minutes) == (
        "utc_midnight",
        0,
    )
    assert (products["9230"].reset, products["9230"].reset_utc_offset_minutes) == (
        "local_midnight",
        480,
    )


async def test_the_catalogue_is_read_page_by_page(sim_url: str) -> None:
    carrier = WebbingCarrier(sim_url, USERNAME, PASSWORD, WSKEY, page_size=2)
    try:
        products = await carrier.list_products()  # every product, 2 to a page
    finally:
        await carrier.aclose()
    assert len(products) == len({p.carrier_product_id for p in products}) == len(CATALOGUE)


async def test_settings_build_both_carriers(sim_url: str) -> None:
    settings = Settings(
        webbing=WebbingSettings(
            base_url=sim_url,
            username=USERNAME,
            password=SecretStr(PASSWORD),
            wskey=SecretStr(WSKEY),
        ),
        telna=TelnaSettings(api_key=SecretStr("unused")),
    )
    carriers = build_carriers(settings)
    try:
        assert set(carriers) == {"telna", "webbing", "esimgo"}
        assert carriers["webbing"].name == "webbing"
        assert await carriers["webbing"].list_products()
    finally:
        for carrier in carriers.values():
            await carrier.aclose()


async def test_business_refusals_are_rejections_with_the_response_code(
    webbing: WebbingCarrier, control: httpx.AsyncClient, sim_url: str
) -> None:
    iccid = await enrolled(control)
    stranger = new_iccid()
    with pytest.raises(CarrierRejected) as unknown_device:
        await webbing.order(stranger, "1042", "bal-3:1")
    assert stranger in unknown_device.value.message
    with pytest.raises(CarrierRejected) as unknown_product:
        await webbing.order(iccid, "4040", "bal-3:2")
    assert "4040" in unknown_product.value.message
    with pytest.raises(CarrierRejected):
        await webbing.get_line("not-a-line")

    impostor = WebbingCarrier(sim_url, USERNAME, PASSWORD, "not-the-wskey")
    try:
        with pytest.raises(CarrierRejected) as unauthorised:
            await impostor.list_products()
    finally:
        await impostor.aclose()
    assert unauthorised.value.code == "1001"
    assert await orders(control, iccid) == []


async def test_simulated_errors_are_unavailable_and_change_nothing(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    await webbing.list_products()
    await control.post("/faults", json={"error_rate": 1.0})
    with pytest.raises(CarrierUnavailable):
        await webbing.order(iccid, "1042", "bal-4:1")
    with pytest.raises(CarrierUnavailable):
        await webbing.find_lines(iccid)
    await control.post("/faults", json={})
    assert await webbing.find_lines(iccid) == []


async def test_rate_limit_and_outage_are_unavailable(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    await control.post("/faults", json={"rate_limit_per_second": 1})
    with pytest.raises(CarrierRejected):
        await webbing.find_lines(new_iccid())  # counts against the limit
    with pytest.raises(CarrierUnavailable) as limited:
        await webbing.list_products()
    assert limited.value.retry_after == 1.0
    await control.post("/faults", json={"outage_seconds": 5})
    with pytest.raises(CarrierUnavailable) as outage:
        await webbing.find_lines(await enrolled(control))
    assert outage.value.retry_after is None


async def test_lost_answers_are_unknown_outcomes_for_writes_and_unavailable_for_reads(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    await webbing.list_products()
    await control.post("/faults", json={"lose_responses": 1.0})
    with pytest.raises(CarrierOutcomeUnknown):  # the change itself (an order reads first)
        await webbing._call("ChangeServiceDeviceProduct", change(iccid, "9030"), True)
    with pytest.raises(CarrierUnavailable):
        await webbing.find_lines(iccid)
    await control.post("/faults", json={})
    await asyncio.sleep(2.0)  # the change takes effect after the activation latency
    [line] = await webbing.find_lines(iccid)
    assert line.carrier_product_id == "9030"  # the change whose answer was lost happened
    await control.post("/faults", json={"lose_responses": 1.0})
    with pytest.raises(CarrierUnavailable):
        await webbing.usage(line.line_id)
    await control.post("/faults", json={})


async def test_read_timeouts_are_unknown_for_writes_and_unavailable_for_reads(
    sim_url: str, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    impatient = client(sim_url, timeout=0.2)
    await impatient.list_products()
    await control.post("/faults", json={"latency_ms": 400})
    try:
        with pytest.raises(CarrierOutcomeUnknown):
            await impatient._call("ChangeServiceDeviceProduct", change(iccid, "9030"), True)
        with pytest.raises(CarrierUnavailable):
            await impatient.find_lines(iccid)
    finally:
        await impatient.aclose()
    await control.post("/faults", json={})
    await asyncio.sleep(3.0)  # past the activation latency
    assert await orders(control, iccid) == [None]  # the timed-out change happened


async def test_refused_connections_are_unavailable() -> None:
    port = free_port()  # nobody listens there
    carrier = client(f"http://127.0.0.1:{port}", timeout=1.0)
    try:
        with pytest.raises(CarrierUnavailable):
            await carrier.list_products()
        with pytest.raises(CarrierUnavailable):
            await carrier.find_lines(new_iccid())
    finally:
        await carrier.aclose()


async def test_dropped_connections_are_unknown_for_writes_and_unavailable_for_reads() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    carrier = client(f"http://127.0.0.1:{port}", timeout=2.0)
    try:
        with pytest.raises(CarrierOutcomeUnknown):
            await carrier._call("ChangeServiceDeviceProduct", change(new_iccid(), "1042"), True)
        with pytest.raises(CarrierUnavailable):
            await carrier.find_lines(new_iccid())
    finally:
        await carrier.aclose()
        server.close()
        await server.wait_closed()
