"""The Webbing-like simulator over real HTTP: SOAP shapes, time, usage lag, faults, state."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from config import get_settings
from simulators.webbing import SimulatorConfigError, create_app, main
from tests.servers import serve
from tests.simulators.webbing_calls import (
    PASSWORD,
    USERNAME,
    WSKEY,
    Answer,
    call,
    enrolled,
    fields,
    ledger,
    moment,
    new_iccid,
    order,
    until,
)

DATE = re.compile(r"^\d\d/\d\d/\d{4}$")
TIME = re.compile(r"^\d\d/\d\d/\d{4} \d\d:\d\d:\d\d\.\d{3}$")


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve(create_app(USERNAME, PASSWORD, WSKEY, seed=13)) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url) as client:
        yield client
        await client.post("/_sim/faults", json={})


async def test_add_activate_deactivate_round_trip(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    added = await call(
        sim, "AddServiceDeviceProduct", fields(ICCID=iccid, ProductID="9010", Reference="b-1:1")
    )
    assert added.status == 200
    assert (added.ok, added.code, added.head["ResponseDescription"]) == (True, 0, "Success")
    ordered = added.one("ServiceDeviceProduct")
    assert (ordered["StatusID"], ordered["Status"], ordered["Reference"]) == (
        "2",
        "Inactive",
        "b-1:1",
    )
    assert ordered["ServiceDeviceProductID"].isdigit()
    assert ordered["DailyHighSpeedMB"] == "1" and ordered["TotalHSUsage"] == "0"
    assert DATE.match(ordered["OrderDate"]) and TIME.match(ordered["OrderedAtUtc"])
    assert "ActivatedAtUtc" not in ordered
    instance_id = ordered["ServiceDeviceProductID"]

    requested = datetime.now(UTC)
    activation = await call(
        sim, "ActivateServiceDeviceProduct", fields(ServiceDeviceProductID=instance_id, ICCID=iccid)
    )
    assert activation.ok and activation.one("ServiceDeviceProduct")["StatusID"] == "2"
    active = await until(sim, instance_id, "3")
    activated, expires = moment(active["ActivatedAtUtc"]), moment(active["ExpiresAtUtc"])
    # 9010 is compressed: it activates 1-5 % of its 10 s after the request
    assert timedelta(0) < activated - requested < timedelta(seconds=1)
    assert expires - activated == timedelta(seconds=10)
    assert DATE.match(active["ActivationDate"]) and DATE.match(active["ExpirationDate"])

    deactivated = await call(
        sim, "DeactivateServiceDeviceProduct", fields(ServiceDeviceProductID=instance_id)
    )
    ended = deactivated.one("ServiceDeviceProduct")
    assert (ended["StatusID"], ended["Status"]) == ("5", "Deactivated")
    again = await call(
        sim, "DeactivateServiceDeviceProduct", fields(ServiceDeviceProductID=instance_id)
    )
    assert again.one("ServiceDeviceProduct")["DeactivatedAtUtc"] == ended["DeactivatedAtUtc"]

    entries = await ledger(sim, iccid)
    assert [e["action"] for e in entries] == ["order", "activate", "deactivate"]
    assert {(e["package_id"], e["reference"], e["product_id"]) for e in entries} == {
        (instance_id, "b-1:1", "9010")
    }


async def test_a_repeated_reference_buys_again_and_instances_page_by_number(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    ids = [await order(sim, iccid, "1042", "b-2:1") for _ in range(5)]
    assert len(set(ids)) == 5
    pages = []
    for number in (1, 2, 3, 4):
        paging = {"PageSize": 2, "PageNumber": number}
        answer = await call(
            sim, "GetServiceDeviceProducts", fields(ICCID=iccid, PaginationRequest=paging)
        )
        assert (answer.head["TotalRecords"], answer.head["TotalPages"]) == ("5", "3")
        pages.append([i["ServiceDeviceProductID"] for i in answer.many("ServiceDeviceProducts")])
    assert pages == [ids[0:2], ids[2:4], ids[4:5], []]
    for bad in ({"PageSize": 0}, {"PageSize": 501}, {"PageNumber": "x"}):
        refused = await call(
            sim, "GetServiceDeviceProducts", fields(ICCID=iccid, PaginationRequest=bad)
        )
        assert (refused.status, refused.ok, refused.code) == (200, False, 1006)


async def test_products_carry_units_validity_and_reset_rules(sim: httpx.AsyncClient) -> None:
    answer = await call(sim, "GetProductsList", fields(PaginationRequest={"PageSize": 500}))
    products = {p["ProductID"]: p for p in answer.many("Products")}
    assert answer.head["TotalRecords"] == str(len(products))
    daily = products["1042"]
    assert (daily["DailyHighSpeedMB"], daily["ValidityHours"], daily["ThrottleKbps"]) == (
        "1000",
        "24",
        "128",
    )
    assert (daily["ResetRule"], daily["Price"], daily["Currency"]) == ("Rolling", "1.50", "USD")
    assert products["9030"]["ValidityHours"] == "0.008333"
    assert (products["1044"]["ResetRule"], products["1045"]["ResetRule"]) == (
        "UtcMidnight",
        "LocalMidnight",
    )
    assert products["1045"]["ResetUtcOffsetMinutes"] == "480"
    assert {"9010", "9030", "9060", "9600", "9130", "9230"} <= set(products)
    control = (await sim.get("/_sim/products")).json()["products"]
    assert {p["id"] for p in control} == set(products)
    assert next(p for p in control if p["id"] == "9230")["reset_utc_offset_minutes"] == 480


async def test_a_compressed_utc_midnight_instance_ends_on_a_multiple_of_its_day(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    instance_id = await order(sim, iccid, "9130")
    await call(sim, "ActivateServiceDeviceProduct", fields(ServiceDeviceProductID=instance_id))
    active = await until(sim, instance_id, "3")
    expires = moment(active["ExpiresAtUtc"]).timestamp()
    assert expires % 30 == 0
    assert 0 < expires - moment(active["ActivatedAtUtc"]).timestamp() <= 30


async def test_a_queued_instance_starts_exactly_at_its_start_time(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    start = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=250_000)
    start_text = start.strftime("%m/%d/%Y %H:%M:%S.250")
    answer = await call(
        sim,
        "AddServiceDeviceProduct",
        fields(ICCID=iccid, ProductID="9060", Reference="b-3:1", StartAtUtc=start_text),
    )
    queued = answer.one("ServiceDeviceProduct")
    assert (queued["StatusID"], queued["StartAtUtc"]) == ("2", start_text)
    active = await until(sim, queued["ServiceDeviceProductID"], "3")
    assert active["ActivatedAtUtc"] == start_text
    device = await call(sim, "GetServiceDevice", fields(ICCID=iccid))
    assert device.one("ServiceDevice")["StatusID"] == "3"


async def test_usage_lags_in_batches_and_splits_high_speed_from_throttled(
    sim: httpx.AsyncClient,
) -> None:
    await sim.post("/_sim/usage-lag", json={"compressed_seconds": 0.6})
    try:
        iccid = await enrolled(sim)
        instance_id = await order(sim, iccid, "9010")
        await call(sim, "ActivateServiceDeviceProduct", fields(ServiceDeviceProductID=instance_id))
        await until(sim, instance_id, "3")
        # 1 MB at 4 MB/s: exhausted after 0.25 s, then throttled at 128 kbps (16 kB/s)
        await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 4_000_000})
        reports: list[tuple[float, float, dict[str, str]]] = []  # sent, answered, report
        started = time.time()
        while time.time() - started < 2.2:
            sent = time.time()
            usage = await call(sim, "GetOnlineDeviceUsage", fields(ICCID=iccid))
            reports.append((sent, time.time(), usage.head))
            await asyncio.sleep(0.05)
        await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 0})
    finally:
        await sim.post("/_sim/usage-lag", json={"compressed_seconds": 2.0})
    exhausted = next(e for e in await ledger(sim, iccid) if e["action"] == "exhaust")
    exhausted_at = datetime.fromisoformat(exhausted["at"]).timestamp()
    as_of = [moment(r["UsageAsOfUtc"]).timestamp() for _, _, r in reports]
    # A reading is never from after the answer, and when the simulator answered (after
    # the request was sent: a loaded box can take its time to carry the answer back) it
    # was at most the lag old (+ a tick of 0.15 s, + a slow machine). Some are old.
    newest = [answered - at for (_, answered, _), at in zip(reports, as_of, strict=True)]
    oldest = [sent - at for (sent, _, _), at in zip(reports, as_of, strict=True)]
    assert min(newest) >= 0 and max(oldest) <= 0.6 + 0.5, (newest, oldest)
    assert max(newest) >= 0.3, newest
    # readings come lag apart (the first report may predate the first reading: "as of
    # activation")
    readings = sorted(set(as_of))[1:]
    assert len(readings) >= 3
    assert all(b - a >= 0.59 for a, b in itertools.pairwise(readings))
    for (_, _, report), at in zip(reports, as_of, strict=True):
        # what was used at the reading, not now: 4 MB/s until 1 MB at the exhaust time
        true_then = min(1.0, max(0.0, 1.0 - 4.0 * (exhausted_at - at)))
        assert float(report["TotalHSUsage"]) == pytest.approx(true_then, abs=0.003), report
    last = reports[-1][2]
    assert (last["TotalHSUsage"], last["DailyHighSpeedMB"]) == ("1", "1")
    throttled_seconds = moment(last["UsageAsOfUtc"]).timestamp() - exhausted_at
    assert float(last["TotalWBUsage"]) == pytest.approx(0.016 * throttled_seconds, abs=0.002)
    history = await call(sim, "GetDeviceUsage", fields(ICCID=iccid))
    [row] = history.many("DeviceUsages")
    assert (row["ServiceDeviceProductID"], row["TotalHSUsage"]) == (instance_id, "1")


async def test_faults_apply_to_the_soap_endpoints(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    body = fields(ICCID=iccid, ProductID="1042", Reference="b-4:1")
    await sim.post("/_sim/faults", json={"error_rate": 1.0})
    assert (await call(sim, "AddServiceDeviceProduct", body)).status == 503
    await sim.post("/_sim/faults", json={"lose_responses": 1.0})
    lost = await call(sim, "AddServiceDeviceProduct", body)
    assert (lost.status, lost.result, lost.fault) == (504, None, None)
    await sim.post("/_sim/faults", json={"rate_limit_per_second": 1})
    statuses = [(await call(sim, "GetProductsList")).status for _ in range(2)]
    assert statuses == [200, 429]
    await sim.post("/_sim/faults", json={"outage_seconds": 5})
    assert (await call(sim, "GetProductsList")).status == 503
    await sim.post("/_sim/faults", json={})
    assert [e["reference"] for e in await ledger(sim, iccid)] == ["b-4:1"]  # the lost one


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "webbing.json"
    iccid = new_iccid()

    async def first(url: str) -> str:
        async with httpx.AsyncClient(base_url=url) as http:
            await http.post("/_sim/esims", json={"iccids": [iccid]})
            return await order(http, iccid, "9600", "b-5:1")

    async def second(url: str) -> Answer:
        async with httpx.AsyncClient(base_url=url) as http:
            return await call(http, "GetServiceDeviceProducts", fields(ICCID=iccid))

    with serve(create_app(USERNAME, PASSWORD, WSKEY, state_file=state)) as url:
        instance_id = asyncio.run(first(url))
    assert state.exists()
    with serve(create_app(USERNAME, PASSWORD, WSKEY, state_file=state)) as url:
        [kept] = asyncio.run(second(url)).many("ServiceDeviceProducts")
    assert (kept["ServiceDeviceProductID"], kept["Reference"]) == (instance_id, "b-5:1")


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
