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


async def references(control: httpx.AsyncClient, iccid: str) -> list[str | None]:
    entries = (await control.get("/ledger", params={"iccid": iccid})).json()["entries"]
    return [e["reference"] for e in entries if e["action"] == "order"]


async def test_a_line_goes_from_scheduled_to_active_to_ended(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    line = await webbing.order(iccid, "9010", "bal-1:1")
    assert (line.status, line.reference, line.iccid) == ("scheduled", "bal-1:1", iccid)
    assert (line.carrier_product_id, line.allowance_bytes, line.used_bytes) == ("9010", 10**6, 0)
    assert abs(line.ordered_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert (await webbing.activate(line.line_id)).status == "scheduled"
    active = await until_active(webbing, line.line_id)
    assert active.activated_at is not None and active.ends_at is not None
    assert active.ends_at - active.activated_at == timedelta(seconds=10)

    await control.post("/traffic", json={"iccid": iccid, "bytes_per_second": 10_000_000})
    await asyncio.sleep(0.3)
    usage = await webbing.usage(line.line_id)
    assert (usage.line_id, usage.used_bytes, usage.allowance_bytes) == (line.line_id, 10**6, 10**6)
    assert abs(usage.observed_at - datetime.now(UTC)) < timedelta(seconds=2)
    await control.post("/traffic", json={"iccid": iccid, "bytes_per_second": 0})

    ended = await webbing.deactivate(line.line_id)
    assert ended.status == "ended" and ended.ended_at is not None
    assert (await webbing.get_line(line.line_id)).ended_at == ended.ended_at


async def test_products_carry_validity_reset_rules_and_prices(webbing: WebbingCarrier) -> None:
    products = {p.carrier_product_id: p for p in await webbing.list_products()}
    assert {"1042", "9010", "9030", "9060", "9600", "9130", "9230"} <= set(products)
    daily = products["1042"]
    assert (daily.allowance_bytes, daily.validity_seconds, daily.reset) == (
        10**9,
        86_400,
        "rolling",
    )
    assert (daily.throttle_kbps, daily.price_cents) == (128, 150)
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


async def test_find_lines_pages_through_every_instance(
    sim_url: str, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    carrier = WebbingCarrier(sim_url, USERNAME, PASSWORD, WSKEY, page_size=2)
    try:
        ordered = [(await carrier.order(iccid, "1042", f"bal-2:{n}")).line_id for n in range(5)]
        lines = await carrier.find_lines(iccid)
        products = await carrier.list_products()  # every product, 2 to a page
    finally:
        await carrier.aclose()
    assert [line.line_id for line in lines] == ordered
    assert [line.reference for line in lines] == [f"bal-2:{n}" for n in range(5)]
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
        assert set(carriers) == {"telna", "webbing"}
        assert carriers["webbing"].name == "webbing"
        assert await carriers["webbing"].list_products()
    finally:
        for carrier in carriers.values():
            await carrier.aclose()


async def test_business_refusals_are_rejections_with_the_response_code(
    webbing: WebbingCarrier, control: httpx.AsyncClient, sim_url: str
) -> None:
    iccid = await enrolled(control)
    refusals = [
        (webbing.order(new_iccid(), "1042", "bal-3:1"), "1002"),
        (webbing.order(iccid, "4040", "bal-3:2"), "1003"),
        (webbing.get_line("123456"), "1004"),
    ]
    for attempt, code in refusals:
        with pytest.raises(CarrierRejected) as refused:
            await attempt
        assert refused.value.code == code and refused.value.message

    line = await webbing.order(iccid, "1042", "bal-3:3")
    await webbing.deactivate(line.line_id)
    with pytest.raises(CarrierRejected) as wrong_state:
        await webbing.activate(line.line_id)
    assert wrong_state.value.code == "1005"

    impostor = WebbingCarrier(sim_url, USERNAME, PASSWORD, "not-the-wskey")
    try:
        with pytest.raises(CarrierRejected) as unauthorised:
            await impostor.order(iccid, "1042", "bal-3:4")
    finally:
        await impostor.aclose()
    assert unauthorised.value.code == "1001"
    assert await references(control, iccid) == ["bal-3:3"]


async def test_simulated_errors_are_unavailable_and_change_nothing(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
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
        await webbing.get_line("1")  # counts against the limit
    with pytest.raises(CarrierUnavailable) as limited:
        await webbing.list_products()
    assert limited.value.retry_after == 1.0
    await control.post("/faults", json={"outage_seconds": 5})
    with pytest.raises(CarrierUnavailable) as outage:
        await webbing.order(await enrolled(control), "1042", "bal-5:1")
    assert outage.value.retry_after is None


async def test_lost_answers_are_unknown_outcomes_for_writes_and_unavailable_for_reads(
    webbing: WebbingCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    await control.post("/faults", json={"lose_responses": 1.0})
    with pytest.raises(CarrierOutcomeUnknown):
        await webbing.order(iccid, "1042", "bal-6:1")
    with pytest.raises(CarrierUnavailable):
        await webbing.find_lines(iccid)
    await control.post("/faults", json={})
    [line] = await webbing.find_lines(iccid)
    assert line.reference == "bal-6:1"  # the order whose answer was lost happened
    await control.post("/faults", json={"lose_responses": 1.0})
    for write in (webbing.activate, webbing.deactivate):
        with pytest.raises(CarrierOutcomeUnknown):
            await write(line.line_id)
    with pytest.raises(CarrierUnavailable):
        await webbing.usage(line.line_id)


async def test_read_timeouts_are_unknown_for_writes_and_unavailable_for_reads(
    sim_url: str, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    impatient = client(sim_url, timeout=0.2)
    await control.post("/faults", json={"latency_ms": 400})
    try:
        with pytest.raises(CarrierOutcomeUnknown):
            await impatient.order(iccid, "1042", "bal-7:1")
        with pytest.raises(CarrierUnavailable):
            await impatient.get_line("anything")
    finally:
        await impatient.aclose()
    await control.post("/faults", json={})
    await asyncio.sleep(0.4)
    assert await references(control, iccid) == ["bal-7:1"]


async def test_refused_connections_are_unavailable() -> None:
    port = free_port()  # nobody listens there
    carrier = client(f"http://127.0.0.1:{port}", timeout=1.0)
    try:
        with pytest.raises(CarrierUnavailable):
            await carrier.order(new_iccid(), "1042", "bal-8:1")
        with pytest.raises(CarrierUnavailable):
            await carrier.get_line("1")
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
            await carrier.activate("1")
        with pytest.raises(CarrierUnavailable):
            await carrier.usage("1")
    finally:
        await carrier.aclose()
        server.close()
        await server.wait_closed()
