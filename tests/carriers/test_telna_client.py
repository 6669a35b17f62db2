"""TelnaCarrier over real HTTP: shapes against the simulator, error mapping against stubs."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from pydantic import SecretStr

from carriers.base import CarrierLine
from carriers.errors import (
    CarrierError,
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
)
from carriers.telna import TelnaCarrier
from config import Settings, TelnaSettings
from models.identifiers import make_iccid
from ports import free_port
from simulators.telna import create_app
from tests.servers import serve

API_KEY = "client-test-key"
_serial = itertools.count(1)


def new_iccid() -> str:
    return make_iccid(f"8944{next(_serial) + 7_000_000:014d}")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve(create_app(API_KEY, "secret", seed=5)) as url:
        yield url


@pytest.fixture
async def control(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=f"{sim_url}/_sim") as client:
        yield client
        await client.post("/faults", json={})


@pytest.fixture
async def telna(sim_url: str) -> AsyncIterator[TelnaCarrier]:
    carrier = TelnaCarrier(sim_url, API_KEY, timeout=2.0)
    yield carrier
    await carrier.aclose()


async def enrolled(control: httpx.AsyncClient) -> str:
    iccid = new_iccid()
    await control.post("/esims", json={"iccids": [iccid]})
    return iccid


async def until_active(telna: TelnaCarrier, line_id: str) -> CarrierLine:
    for _ in range(100):
        line = await telna.get_line(line_id)
        if line.status == "active":
            return line
        await asyncio.sleep(0.05)
    raise AssertionError("line never became active")


async def test_a_line_goes_from_scheduled_to_active_to_ended(
    telna: TelnaCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    products = {p.carrier_product_id: p for p in await telna.list_products()}
    assert products["compressed-10s"].validity_seconds == 10
    assert products["daily-3gb"].allowance_bytes == 3_000_000_000
    assert products["daily-3gb"].throttle_kbps == 1000

    line = await telna.order(iccid, "compressed-10s-manual", "bal-1:1")
    # Telna has no field for our reference: a line is known by its id.
    assert (line.status, line.reference, line.iccid) == ("scheduled", None, iccid)
    assert line.ordered_at.tzinfo is not None
    assert abs(line.ordered_at - datetime.now(UTC)) < timedelta(seconds=5)
    assert (await telna.activate(line.line_id)).status == "scheduled"
    active = await until_active(telna, line.line_id)
    assert active.activated_at is not None and active.ends_at is not None
    assert active.ends_at - active.activated_at == timedelta(seconds=10)

    usage = await telna.usage(line.line_id)
    assert (usage.line_id, usage.allowance_bytes) == (line.line_id, 1_000_000)
    ended = await telna.deactivate(line.line_id)
    assert ended.status == "ended" and ended.ended_at is not None


async def test_find_lines_pages_through_every_package(
    sim_url: str, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    carrier = TelnaCarrier(sim_url, API_KEY, page_size=2)
    try:
        ordered = [
            (await carrier.order(iccid, "daily-1gb", f"bal-2:{n}")).line_id for n in range(5)
        ]
        lines = await carrier.find_lines(iccid)
    finally:
        await carrier.aclose()
    assert [line.line_id for line in lines] == ordered
    assert {line.iccid for line in lines} == {iccid}


async def test_from_settings_reaches_the_carrier(sim_url: str) -> None:
    settings = Settings(telna=TelnaSettings(base_url=sim_url, api_key=SecretStr(API_KEY)))
    carrier = TelnaCarrier.from_settings(settings)
    try:
        assert carrier.name == "telna"
        assert await carrier.list_products()
    finally:
        await carrier.aclose()


async def test_business_refusals_are_rejections_with_the_carriers_message(
    telna: TelnaCarrier, control: httpx.AsyncClient, sim_url: str
) -> None:
    with pytest.raises(CarrierRejected) as unknown_sim:
        await telna.order(new_iccid(), "daily-1gb", "bal-3:1")
    assert unknown_sim.value.code == "404" and "unknown sim" in unknown_sim.value.message

    line = await telna.order(await enrolled(control), "daily-1gb", "bal-3:2")
    await telna.deactivate(line.line_id)
    with pytest.raises(CarrierRejected) as terminated:
        await telna.activate(line.line_id)
    assert terminated.value.code == "409"

    wrong_key = TelnaCarrier(sim_url, "not-the-key")
    try:
        with pytest.raises(CarrierRejected) as unauthorised:
            await wrong_key.list_products()
    finally:
        await wrong_key.aclose()
    assert unauthorised.value.code == "401"


async def test_simulated_errors_are_unavailable_and_change_nothing(
    telna: TelnaCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    await control.post("/faults", json={"error_rate": 1.0})
    with pytest.raises(CarrierUnavailable):
        await telna.order(iccid, "daily-1gb", "bal-4:1")
    with pytest.raises(CarrierUnavailable):
        await telna.find_lines(iccid)
    await control.post("/faults", json={})
    assert await telna.find_lines(iccid) == []


async def test_rate_limit_is_unavailable_with_retry_after(
    telna: TelnaCarrier, control: httpx.AsyncClient
) -> None:
    await control.post("/faults", json={"rate_limit_per_second": 1})
    await telna.list_products()
    with pytest.raises(CarrierUnavailable) as limited:
        await telna.list_products()
    assert limited.value.retry_after == 1.0


async def test_outage_is_unavailable(telna: TelnaCarrier, control: httpx.AsyncClient) -> None:
    await control.post("/faults", json={"outage_seconds": 5})
    with pytest.raises(CarrierUnavailable):
        await telna.order(await enrolled(control), "daily-1gb", "bal-5:1")


async def test_lost_answers_are_unknown_outcomes_for_orders_and_unavailable_for_reads(
    telna: TelnaCarrier, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    await control.post("/faults", json={"lose_responses": 1.0})
    with pytest.raises(CarrierOutcomeUnknown):
        await telna.order(iccid, "daily-1gb", "bal-6:1")
    with pytest.raises(CarrierUnavailable):
        await telna.find_lines(iccid)
    await control.post("/faults", json={})
    assert [line.carrier_product_id for line in await telna.find_lines(iccid)] == ["daily-1gb"]


async def test_read_timeouts_are_unknown_for_orders_and_unavailable_for_reads(
    sim_url: str, control: httpx.AsyncClient
) -> None:
    iccid = await enrolled(control)
    impatient = TelnaCarrier(sim_url, API_KEY, timeout=0.2)
    await control.post("/faults", json={"latency_ms": 400})
    try:
        with pytest.raises(CarrierOutcomeUnknown):
            await impatient.order(iccid, "daily-1gb-manual", "bal-7:1")
        with pytest.raises(CarrierUnavailable):
            await impatient.get_line("anything")
    finally:
        await impatient.aclose()
    await control.post("/faults", json={})
    await asyncio.sleep(0.4)
    ledger = (await control.get("/ledger", params={"iccid": iccid})).json()["entries"]
    assert [e["action"] for e in ledger] == ["order"]  # the timed-out order happened


async def test_refused_connections_are_unavailable() -> None:
    port = free_port()  # nobody listens there
    carrier = TelnaCarrier(f"http://127.0.0.1:{port}", API_KEY, timeout=1.0)
    try:
        with pytest.raises(CarrierUnavailable):
            await carrier.order(new_iccid(), "daily-1gb", "bal-8:1")
        with pytest.raises(CarrierUnavailable):
            await carrier.get_line("x")
    finally:
        await carrier.aclose()


async def test_dropped_connections_are_unknown_for_orders_and_unavailable_for_reads() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    carrier = TelnaCarrier(f"http://127.0.0.1:{port}", API_KEY, timeout=2.0)
    try:
        with pytest.raises(CarrierOutcomeUnknown):
            await carrier.activate("x")
        with pytest.raises(CarrierUnavailable):
            await carrier.usage("x")
    finally:
        await carrier.aclose()
        server.close()
        await server.wait_closed()


class Stub:
    """A carrier that answers every request with the reply set by the test."""

    def __init__(self) -> None:
        self.status = 200
        self.body: bytes = b"{}"
        self.headers: dict[str, str] = {}
        self.seen: list[dict[str, str]] = []
        self.app = FastAPI()
        self.app.api_route("/v2.1/{path:path}", methods=["GET", "POST"])(self.reply)

    async def reply(self, request: Request) -> Response:
        self.seen.append(dict(request.headers))
        return Response(self.body, self.status, self.headers, media_type="application/json")


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[Stub, str]]:
    carrier = Stub()
    with serve(carrier.app) as url:
        yield carrier, url


def http_date(seconds_ahead: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_ahead), usegmt=True)


@pytest.mark.parametrize(
    ("method", "status", "body", "headers", "expected"),
    [
        ("GET", 500, b"", {}, CarrierUnavailable),
        ("POST", 500, b"", {}, CarrierOutcomeUnknown),
        ("GET", 502, b"", {}, CarrierUnavailable),
        ("POST", 502, b"", {}, CarrierOutcomeUnknown),
        ("GET", 504, b"", {}, CarrierUnavailable),
        ("POST", 504, b"", {}, CarrierOutcomeUnknown),
        ("POST", 503, b"", {"Retry-After": "7"}, CarrierUnavailable),
        ("GET", 429, b"", {"Retry-After": "+30 s as an HTTP date"}, CarrierUnavailable),
        ("POST", 400, b'{"error": "bad template"}', {}, CarrierRejected),
        ("GET", 404, b'{"error": "no such package"}', {}, CarrierRejected),
        ("POST", 200, b"<html>", {}, CarrierOutcomeUnknown),
        ("GET", 200, b'{"id": 1}', {}, CarrierUnavailable),
    ],
)
async def test_status_codes_map_to_the_error_tree(
    stub: tuple[Stub, str],
    method: str,
    status: int,
    body: bytes,
    headers: dict[str, str],
    expected: type[CarrierError],
) -> None:
    carrier_stub, url = stub
    dated_at = time.monotonic()
    if headers.get("Retry-After", "").startswith("+30"):
        headers = {"Retry-After": http_date(30)}
    carrier_stub.status, carrier_stub.body, carrier_stub.headers = status, body, headers
    carrier = TelnaCarrier(url, API_KEY)
    try:
        with pytest.raises(CarrierError) as caught:
            if method == "POST":
                await carrier.activate("pkg-1")
            else:
                await carrier.get_line("pkg-1")
    finally:
        await carrier.aclose()
    error: Any = caught.value
    assert type(error) is expected
    if "Retry-After" in headers and status == 503:
        assert error.retry_after == pytest.approx(7)
    elif "Retry-After" in headers:
        # An HTTP date counts down from when it was written (to the whole second).
        elapsed = time.monotonic() - dated_at
        assert 30 - elapsed - 1 <= error.retry_after <= 30, (error.retry_after, elapsed)
    if expected is CarrierRejected:
        assert error.code == str(status)
        assert error.message == body.decode().split('"')[3]


async def test_every_request_carries_the_raw_key_and_a_fresh_request_id(
    stub: tuple[Stub, str],
) -> None:
    carrier_stub, url = stub
    carrier_stub.status, carrier_stub.body, carrier_stub.headers = 404, b"{}", {}
    carrier_stub.seen.clear()
    carrier = TelnaCarrier(url, API_KEY)
    try:
        for _ in range(2):
            with pytest.raises(CarrierRejected):
                await carrier.get_line("pkg-1")
    finally:
        await carrier.aclose()
    assert [seen["authorization"] for seen in carrier_stub.seen] == [API_KEY, API_KEY]
    ids = [uuid.UUID(seen["request-id"]) for seen in carrier_stub.seen]
    assert ids[0] != ids[1] and ids[0].version == 4
