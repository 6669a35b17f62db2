"""The Webbing-like simulator over real HTTP: the record's calls, product changes in time,
suspension, usage lag, faults and state."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from config import get_settings
from simulators.records import Product
from simulators.webbing import CATALOGUE, SimulatorConfigError, create_app, main
from tests.servers import serve
from tests.simulators.webbing_calls import (
    PASSWORD,
    SOAP12_NS,
    USERNAME,
    WSKEY,
    WWS_NS,
    call,
    change,
    device,
    device_id,
    enrolled,
    envelope,
    fields,
    ledger,
    moment,
    new_iccid,
    parse,
    timeline,
    until,
)

TIME = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d\.\d{3}$")
MB = 1_000_000
# Short compressed passes for the tests: they take effect 1-5 % of their validity after
# the change (20-100 ms for 2 s), and end within seconds.
SHORT = Product("9902", "Test 2 s", MB, 2, 128, 1)
USAGE = Product("9920", "Test 20 s", 2 * MB, 20, 128, 1)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    app = create_app(USERNAME, PASSWORD, WSKEY, seed=13, products=(*CATALOGUE, SHORT, USAGE))
    with serve(app) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url) as client:
        yield client
        await client.post("/_sim/faults", json={})
        latency = {"activation_latency_min_seconds": 2, "activation_latency_max_seconds": 90}
        await client.post("/_sim/config", json=latency)
        await client.post("/_sim/usage-lag", json={"compressed_seconds": 2, "real_seconds": 300})


async def real_latency(sim: httpx.AsyncClient, seconds: float) -> None:
    """Real products (1042, 1043) take effect exactly this long after a change."""
    body = {"activation_latency_min_seconds": seconds, "activation_latency_max_seconds": seconds}
    assert (await sim.post("/_sim/config", json=body)).status_code == 200


def at(entry: dict[str, str]) -> datetime:
    return datetime.fromisoformat(entry["at"])


def to_ms(t: datetime) -> datetime:
    """A ledger time as the wire shows it, to the millisecond."""
    return datetime.fromtimestamp(round(t.timestamp() * 1000) / 1000, UTC)


async def test_products_are_listed_on_service_asmx_in_pages(sim: httpx.AsyncClient) -> None:
    pages = []
    for number in (1, 2, 3, 4, 5):
        paging = {"PageSize": 10, "PageNumber": number}
        answer = await call(sim, "GetProductsList", fields(PaginationRequest=paging))
        assert (answer.status, answer.ok, answer.code) == (200, True, 0)
        assert answer.paging == (len(CATALOGUE) + 2, 3)
        pages.append(answer.many("Products"))
    assert [len(p) for p in pages] == [10, 10, len(CATALOGUE) + 2 - 20, 0, 0]
    products = {p["ProductID"]: p for page in pages for p in page}
    assert set(products["1042"]) == {
        "ProductID",
        "ProductName",
        "DailyHighSpeedMB",
        "ValidityHours",
        "ResetRule",
        "ResetUtcOffsetMinutes",
        "ThrottleKbps",
        "Price",
    }
    daily = products["1042"]
    assert (daily["DailyHighSpeedMB"], daily["ValidityHours"], daily["ThrottleKbps"]) == (
        "1000",
        "24",
        "128",
    )
    assert (daily["ResetRule"], daily["Price"]) == ("Rolling", "1.50")
    assert products["9030"]["ValidityHours"] == "0.008333"
    assert (products["1044"]["ResetRule"], products["1045"]["ResetRule"]) == (
        "UtcMidnight",
        "LocalMidnight",
    )
    assert products["1045"]["ResetUtcOffsetMinutes"] == "480"
    control = (await sim.get("/_sim/products")).json()["products"]
    assert {p["id"] for p in control} == set(products)
    whole = await call(sim, "GetProductsList", fields(PaginationRequest={"PageSize": 1000}))
    assert whole.paging == (len(products), 1)


async def test_soap_12_is_answered_in_soap_12(sim: httpx.AsyncClient) -> None:
    content_type = f'application/soap+xml; charset=utf-8; action="{WWS_NS}GetProductsList"'
    response = await sim.post(
        "/service/Service.asmx",
        content=envelope("GetProductsList", soap_ns=SOAP12_NS),
        headers={"Content-Type": content_type},
    )
    assert response.headers["content-type"].startswith("application/soap+xml")
    assert SOAP12_NS in response.text
    assert parse(response).ok


def test_service_devices_list_every_device_in_pages_or_the_one_asked_for() -> None:
    async def run(url: str) -> None:
        async with httpx.AsyncClient(base_url=url) as sim:
            iccids = [await enrolled(sim) for _ in range(5)]
            pages = []
            for number in (1, 2, 3):
                paging = {"PageSize": 2, "PageNumber": number}
                body = fields(OnlyActivePlansDevices="false", PaginationRequest=paging)
                answer = await call(sim, "GetServiceDevices", body)
                assert answer.paging == (5, 3)
                pages.append(answer.many("ServiceDevices"))
            rows = [row for page in pages for row in page]
            assert [row["ICCID"] for row in rows] == iccids
            ids = [int(row["ServiceDeviceID"]) for row in rows]
            assert ids == sorted(set(ids))
            fresh = rows[0]
            assert (fresh["StatusID"], fresh["StatusName"]) == ("2", "Inactive")
            assert (fresh["ProductID"], fresh["ProductName"], fresh["DataUsage"]) == ("0", "", "0")
            assert TIME.match(fresh["UpdatedAtUtc"]) and TIME.match(fresh["StatusDateChange"])

            # A device is named by its ServiceDeviceID as well as by its ICCID.
            by_number = fields(ServiceDeviceIdentifier={"ServiceDeviceID": ids[1]})
            answer = await call(
                sim, "ChangeServiceDeviceProduct", by_number + fields(ProductID="9902")
            )
            assert answer.ok
            await until(sim, iccids[1], "9902")
            only = fields(OnlyActivePlansDevices="true")
            active = (await call(sim, "GetServiceDevices", only)).many("ServiceDevices")
            assert [row["ICCID"] for row in active] == [iccids[1]]
            nobody = fields(DeviceIdentifier={"ICCID": new_iccid()})
            answer = await call(sim, "GetServiceDevices", nobody)
            assert (answer.ok, answer.many("ServiceDevices"), answer.paging) == (True, [], (0, 0))

    with serve(create_app(USERNAME, PASSWORD, WSKEY, seed=3, products=(SHORT,))) as url:
        asyncio.run(run(url))


async def test_a_change_takes_effect_after_the_latency_with_the_old_product_serving_until_then(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await real_latency(sim, 0.4)
    asked = datetime.now(UTC)
    await change(sim, iccid, "1042")
    pending = await device(sim, iccid)  # a pending change is not on the record
    assert (pending["StatusID"], pending["ProductID"]) == ("2", "0")
    first = await until(sim, iccid, "1042")
    took_effect = moment(first["UpdatedAtUtc"])
    assert timedelta(seconds=0.4) <= took_effect - asked < timedelta(seconds=0.6)
    assert (first["StatusID"], first["ProductName"]) == ("3", "Daily 1 GB")
    assert first["StatusDateChange"] == first["UpdatedAtUtc"]

    await change(sim, iccid, "1043")
    still = await device(sim, iccid)
    assert (still["ProductID"], still["UpdatedAtUtc"]) == ("1042", first["UpdatedAtUtc"])
    second = await until(sim, iccid, "1043")
    assert moment(second["UpdatedAtUtc"]) > took_effect
    assert second["StatusDateChange"] == first["StatusDateChange"]

    entries = await ledger(sim, iccid)
    assert [(e["action"], e["product_id"]) for e in entries] == [
        ("order", "1042"),
        ("activate", "1042"),
        ("order", "1043"),
        ("activate", "1043"),
        ("deactivate", "1042"),
    ]
    assert {e["reference"] for e in entries} == {None}
    # Each change is a purchase, billed at its product's price.
    billed = [(e["price_cents"], e["currency"]) for e in entries if e["action"] == "order"]
    assert billed == [(150, "USD"), (350, "USD")]
    assert {e["price_cents"] for e in entries if e["action"] != "order"} == {None}
    assert at(entries[0]) == at(entries[1]) and to_ms(at(entries[1])) == took_effect
    assert at(entries[2]) == at(entries[3]) == at(entries[4])
    assert to_ms(at(entries[4])) == moment(second["UpdatedAtUtc"])
    assert [i["state"] for i in await timeline(sim, iccid)] == ["high_speed"]


async def test_changes_asked_for_while_one_is_pending_take_effect_in_turn(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await real_latency(sim, 0.5)
    await change(sim, iccid, "1043")
    await real_latency(sim, 0)
    await change(sim, iccid, "1042")  # its own latency is nil: it waits for the one before
    assert (await device(sim, iccid))["ProductID"] == "0"
    await until(sim, iccid, "1042")
    entries = await ledger(sim, iccid)
    assert [(e["action"], e["product_id"]) for e in entries] == [
        ("order", "1043"),
        ("activate", "1043"),
        ("order", "1042"),
        ("activate", "1042"),
        ("deactivate", "1043"),
    ]


async def test_a_change_to_the_product_on_the_device_renews_it(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    await real_latency(sim, 0.1)
    await sim.post("/_sim/usage-lag", json={"real_seconds": 0})
    await change(sim, iccid, "1042")
    first = await until(sim, iccid, "1042")
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 2 * MB})
    await asyncio.sleep(0.3)
    used = float((await device(sim, iccid))["DataUsage"])
    assert used >= 0.4
    await change(sim, iccid, "1042")
    deadline = time.monotonic() + 5
    while (renewed := await device(sim, iccid))["UpdatedAtUtc"] == first["UpdatedAtUtc"]:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 0})
    assert renewed["ProductID"] == "1042"
    assert float(renewed["DataUsage"]) < used  # a new allowance, counted from its start
    entries = await ledger(sim, iccid)
    assert [e["action"] for e in entries] == [
        "order",
        "activate",
        "order",
        "activate",
        "deactivate",
    ]
    assert len({e["package_id"] for e in entries}) == 2
    assert [i["state"] for i in await timeline(sim, iccid)] == ["high_speed"]


async def test_a_pass_whose_window_ran_out_keeps_its_product_at_the_throttled_speed(
    sim: httpx.AsyncClient,
) -> None:
    """One product per device, which does not end by itself: past its window a pass's
    allowance is spent, and the device stays on it, throttled, until a change."""
    iccid = await enrolled(sim)
    await change(sim, iccid, "9902")
    serving = await until(sim, iccid, "9902")
    await asyncio.sleep(3.0)  # a 2 s pass
    spent = await device(sim, iccid)
    assert (spent["StatusID"], spent["ProductID"]) == ("3", "9902")
    assert spent["UpdatedAtUtc"] == serving["UpdatedAtUtc"]
    assert [e["action"] for e in await ledger(sim, iccid)] == ["order", "activate", "exhaust"]
    intervals = await timeline(sim, iccid)
    assert [i["state"] for i in intervals] == ["high_speed", "throttled"]


async def test_a_suspended_device_has_no_product_until_it_is_activated_and_changed(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await real_latency(sim, 0)
    await change(sim, iccid, "1042")
    await until(sim, iccid, "1042")
    for _ in range(2):  # idempotent
        assert (await call(sim, "SuspendServiceDevice", device_id(iccid))).ok
    suspended = await device(sim, iccid)
    assert (suspended["StatusID"], suspended["StatusName"], suspended["ProductID"]) == (
        "4",
        "Suspended",
        "0",
    )
    for _ in range(2):
        assert (await call(sim, "ActivateServiceDevice", device_id(iccid))).ok
    resumed = await device(sim, iccid)
    assert (resumed["StatusID"], resumed["StatusName"], resumed["ProductID"]) == (
        "3",
        "Active",
        "0",
    )
    assert moment(resumed["StatusDateChange"]) > moment(suspended["StatusDateChange"])
    await change(sim, iccid, "1042")
    await until(sim, iccid, "1042")
    assert [e["action"] for e in await ledger(sim, iccid)] == [
        "order",
        "activate",
        "deactivate",
        "order",
        "activate",
    ]
    assert [i["state"] for i in await timeline(sim, iccid)] == ["high_speed", "none", "high_speed"]


async def test_usage_is_reported_in_mb_with_the_lag(sim: httpx.AsyncClient) -> None:
    await sim.post("/_sim/usage-lag", json={"compressed_seconds": 0.5})
    iccid = await enrolled(sim)
    await change(sim, iccid, "9920")
    await until(sim, iccid, "9920")
    # 2 MB at 1 MB/s: used up after 2 s, then throttled at 128 kbps (16 kB/s)
    asked = time.monotonic()
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": MB})
    began = time.monotonic()
    reports: list[tuple[float, float, float]] = []  # (sent, answered, DataUsage), from began
    while time.monotonic() - began < 2.8:
        sent = time.monotonic() - began
        used = float((await device(sim, iccid))["DataUsage"])
        reports.append((sent, time.monotonic() - asked, used))
        await asyncio.sleep(0.05)
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 0})
    # never ahead of the traffic, and behind it by at most the lag (+ a tick and slack)
    ahead = [r for r in reports if r[2] > min(2.0, r[1]) + 0.001]
    behind = [r for r in reports if r[2] < min(2.0, r[0] - 0.5 - 0.4)]
    assert (ahead, behind) == ([], [])
    readings = {used for _, _, used in reports}
    assert 4 <= len(readings) < len(reports) / 2  # read in batches, several of them
    assert reports[-1][2] == 2.0  # high-speed only: it stops at the allowance

    today = datetime.now(UTC).strftime("%m/%d/%Y")
    window = device_id(iccid) + fields(StartDate=today, EndDate=today)
    total = await call(sim, "GetDeviceUsage", window + fields(DeviceTimeInterval="Unknown"))
    [record] = total.many("Usage")
    assert total.paging == (1, 1)
    assert record["TotalUsageDays"] == "1"
    assert 2.0 < float(record["TotalUsage"]) < 2.0 + 0.016 * 2  # with the throttled bytes
    by_day = await call(sim, "GetDeviceUsage", window + fields(DeviceTimeInterval="ByDay"))
    assert [(r["Date"], r["TotalUsage"]) for r in by_day.many("Usage")] == [
        (today, record["TotalUsage"])
    ]
    yesterday = (datetime.now(UTC) - timedelta(days=1)).strftime("%m/%d/%Y")
    before = device_id(iccid) + fields(StartDate=yesterday, EndDate=yesterday)
    [nothing] = (await call(sim, "GetDeviceUsage", before)).many("Usage")
    assert (nothing["TotalUsage"], nothing["TotalUsageDays"]) == ("0", "0")


async def test_a_slow_commit_changes_the_product_late_and_reads_answer_at_once(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await real_latency(sim, 0)
    await sim.post("/_sim/faults", json={"commit_delay_ms": 600})
    sent = time.monotonic()
    body = device_id(iccid) + fields(ProductID="1042")
    with pytest.raises(httpx.ReadTimeout):
        await call(sim, "ChangeServiceDeviceProduct", body, timeout=0.2)
    assert (await device(sim, iccid))["ProductID"] == "0"
    assert await ledger(sim, iccid) == []
    assert time.monotonic() - sent < 0.6
    await until(sim, iccid, "1042")
    assert time.monotonic() - sent >= 0.6
    sent = time.monotonic()
    assert (await call(sim, "SuspendServiceDevice", device_id(iccid))).ok
    assert time.monotonic() - sent >= 0.6  # every call that changes state is slow
    report = (await sim.get("/_sim/faults")).json()
    assert report["injected"]["commit_delay"] == 2
    assert [e["action"] for e in await ledger(sim, iccid)] == ["order", "activate", "deactivate"]


async def test_faults_apply_to_the_soap_endpoints(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    await real_latency(sim, 0)
    body = device_id(iccid) + fields(ProductID="1042")
    await sim.post("/_sim/faults", json={"error_rate": 1.0})
    assert (await call(sim, "ChangeServiceDeviceProduct", body)).status == 503
    await sim.post("/_sim/faults", json={"lose_responses": 1.0})
    lost = await call(sim, "ChangeServiceDeviceProduct", body)
    assert (lost.status, lost.result, lost.fault) == (504, None, None)
    await sim.post("/_sim/faults", json={"rate_limit_per_second": 1})
    statuses = [(await call(sim, "GetProductsList")).status for _ in range(2)]
    assert statuses == [200, 429]
    await sim.post("/_sim/faults", json={"outage_seconds": 5})
    assert (await call(sim, "GetServiceDevices")).status == 503
    await sim.post("/_sim/faults", json={})
    await until(sim, iccid, "1042")  # the lost one took effect, the refused one did not
    assert [e["action"] for e in await ledger(sim, iccid)] == ["order", "activate"]


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "webbing.json"
    serving, suspended = new_iccid(), new_iccid()

    async def first(url: str) -> list[dict[str, str]]:
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post("/_sim/esims", json={"iccids": [serving, suspended]})
            await change(http, serving, "1042")
            await call(http, "SuspendServiceDevice", device_id(suspended))
            return [await until(http, serving, "1042"), await device(http, suspended)]

    async def second(url: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
        async with httpx.AsyncClient(base_url=url) as http:
            return [await device(http, serving), await device(http, suspended)], await ledger(
                http, serving
            )

    def app() -> FastAPI:
        return create_app(USERNAME, PASSWORD, WSKEY, state_file=state, activation_latency=(0, 0))

    with serve(app()) as url:
        before = asyncio.run(first(url))
    assert state.exists()
    with serve(app()) as url:
        after, entries = asyncio.run(second(url))
    assert after == before
    assert (after[0]["ProductID"], after[1]["StatusID"]) == ("1042", "4")
    assert [e["action"] for e in entries] == ["order", "activate"]


def test_refuses_to_start_without_credentials() -> None:
    with pytest.raises(SimulatorConfigError, match="credentials"):
        create_app(USERNAME, "", WSKEY)


def test_command_line_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as bad_port:
        main(["--port", "soap"])
    assert bad_port.value.code != 0
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    monkeypatch.setenv("WEBBING__WSKEY", "")
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as no_key:
            main(["--port", "18101"])
    finally:
        get_settings.cache_clear()
    assert no_key.value.code != 0
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "credentials" in line
