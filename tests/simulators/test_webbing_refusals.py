"""What the Webbing-like simulator refuses: Success=false in HTTP 200 (1000 for a call it
cannot read, the wrapper included), SOAP Faults for calls naming no method of the endpoint.

Nothing refused may change the carrier's ledger.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from simulators.webbing import create_app
from tests.servers import serve
from tests.simulators.webbing_calls import (
    PASSWORD,
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
    new_iccid,
    until,
)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve(create_app(USERNAME, PASSWORD, WSKEY, seed=17, activation_latency=(0, 0))) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url) as client:
        yield client
        await client.post("/_sim/faults", json={})


async def test_a_missing_or_misnamed_request_wrapper_is_a_general_error(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    body = device_id(iccid) + fields(ProductID="1042")
    for wrapper in ("", "ChangeProductRequest", "changeServiceDeviceProductRequest", "Request"):
        answer = await call(sim, "ChangeServiceDeviceProduct", body, wrapper=wrapper)
        assert (answer.status, answer.ok, answer.code) == (200, False, 1000), wrapper
        assert "ChangeServiceDeviceProductRequest" in answer.head["ResponseDescription"]
    for method in ("GetProductsList", "GetServiceDevices", "SuspendServiceDevice"):
        answer = await call(sim, method, device_id(iccid), wrapper="")
        assert (answer.ok, answer.code) == (False, 1000), method
    assert (await device(sim, iccid))["StatusID"] == "2"
    assert await ledger(sim, iccid) == []
    assert (await call(sim, "ChangeServiceDeviceProduct", body)).ok  # the same, wrapped


async def test_business_errors_are_http_200_with_a_response_code(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    today = "12/07/2026"
    usage = fields(StartDate=today, EndDate=today)
    cases = [
        ("ChangeServiceDeviceProduct", device_id(new_iccid()) + fields(ProductID="1042"), 1002),
        (
            "ChangeServiceDeviceProduct",
            fields(ServiceDeviceIdentifier={"ServiceDeviceID": 1}) + fields(ProductID="1042"),
            1002,
        ),
        (
            "ChangeServiceDeviceProduct",
            fields(ServiceDeviceIdentifier={"IMEI": "356938035643809"}) + fields(ProductID="1"),
            1002,
        ),
        ("ChangeServiceDeviceProduct", device_id(iccid) + fields(ProductID="7777"), 1003),
        ("ChangeServiceDeviceProduct", device_id(iccid), 1000),
        ("ChangeServiceDeviceProduct", fields(ProductID="1042"), 1000),
        ("SuspendServiceDevice", fields(ServiceDeviceIdentifier="x"), 1000),
        ("ActivateServiceDevice", device_id(new_iccid()), 1002),
        ("GetDeviceUsage", device_id(iccid) + fields(StartDate="2026-12-07", EndDate=today), 1000),
        ("GetDeviceUsage", device_id(iccid) + fields(StartDate=today), 1000),
        ("GetDeviceUsage", device_id(iccid) + fields(StartDate=today, EndDate="12/06/2026"), 1000),
        ("GetDeviceUsage", device_id(iccid) + usage + fields(DeviceTimeInterval="Hourly"), 1000),
        ("GetDeviceUsage", device_id(new_iccid()) + usage, 1002),
        ("GetServiceDevices", fields(OnlyActivePlansDevices="maybe"), 1000),
        ("GetServiceDevices", fields(PaginationRequest={"PageSize": 0}), 1000),
        ("GetServiceDevices", fields(PaginationRequest={"PageSize": 1001}), 1000),
        ("GetProductsList", fields(PaginationRequest={"PageNumber": "x"}), 1000),
    ]
    for method, body, code in cases:
        answer = await call(sim, method, body)
        assert (answer.status, answer.ok, answer.code) == (200, False, code), (method, body)
        assert answer.head["ResponseDescription"]
    assert await ledger(sim, iccid) == []


async def test_wrong_or_missing_credentials_are_refused(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    right = {"Username": USERNAME, "Password": PASSWORD, "WSKey": WSKEY}
    for wrong in (
        {**right, "Username": "someone"},
        {**right, "Password": "guess"},
        {**right, "WSKey": ""},
        {},
    ):
        body = device_id(iccid) + fields(ProductID="1042")
        answer = await call(sim, "ChangeServiceDeviceProduct", body, credentials=wrong)
        assert (answer.status, answer.ok, answer.code) == (200, False, 1001)
        read = await call(sim, "GetServiceDevices", credentials=wrong)
        assert (read.ok, read.code, read.many("ServiceDevices")) == (False, 1001, [])
    assert await ledger(sim, iccid) == []


def broken_envelopes(iccid: str) -> dict[str, str]:
    """name → a raw ChangeServiceDeviceProduct call the service cannot read."""
    good = envelope("ChangeServiceDeviceProduct", device_id(iccid) + fields(ProductID="1042"))
    lol = "".join(
        f'<!ENTITY lol{n} "{"&lol" + str(n - 1) + ";" if n else "lol"}' * 10 + '">'
        for n in range(10)
    )
    with_dtd = good.replace("<soap:Envelope", f"<!DOCTYPE soap:Envelope [{lol}]><soap:Envelope")
    return {
        "billion laughs": with_dtd.replace("1042", "&lol9;"),
        "external entity": good.replace(
            "<soap:Envelope",
            '<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><soap:Envelope',
        ).replace("1042", "&xxe;"),
        "plain DTD": good.replace("<soap:Envelope", "<!DOCTYPE soap:Envelope><soap:Envelope"),
        "truncated": good[: len(good) // 2],
        "not XML": "ICCID=1&ProductID=1042",
        "not an envelope": f'<ChangeServiceDeviceProduct xmlns="{WWS_NS}"/>',
        "oversized": good.replace("1042", "1" * 70_000),
        "another method in the body": good.replace(
            "ChangeServiceDeviceProduct", "SuspendServiceDevice"
        ),
    }


async def test_unreadable_calls_get_a_general_error_and_change_nothing(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    for name, raw in broken_envelopes(iccid).items():
        answer = await call(sim, "ChangeServiceDeviceProduct", raw=raw)
        assert (answer.status, answer.ok, answer.code) == (200, False, 1000), name
        assert answer.result is not None
        assert answer.result.tag == f"{{{WWS_NS}}}ChangeServiceDeviceProductResult", name
    assert await ledger(sim, iccid) == []
    assert (await device(sim, iccid))["StatusID"] == "2"


async def test_calls_naming_no_method_of_the_endpoint_get_a_soap_fault(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    good = envelope("ChangeServiceDeviceProduct", device_id(iccid) + fields(ProductID="1042"))
    cases = {
        "a method of another endpoint": ("/usage/Usage.asmx", None),
        "a method not served": (None, f'"{WWS_NS}GetSpotUsage"'),
        "an action of another namespace": (None, '"http://example.com/ChangeServiceDeviceProduct"'),
        "Accounts.asmx": ("/accounts/Accounts.asmx", None),
        "no SOAPAction": (None, ""),
    }
    for name, (endpoint, action) in cases.items():
        answer = await call(
            sim, "ChangeServiceDeviceProduct", raw=good, endpoint=endpoint, action=action
        )
        assert answer.status == 500, name
        assert answer.fault is not None and answer.fault["faultcode"] == "soap:Client", name
    assert await ledger(sim, iccid) == []
    assert (await call(sim, "ChangeServiceDeviceProduct", raw=good)).ok
    await until(sim, iccid, "1042")


async def test_a_suspended_device_takes_no_product_change(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    await change(sim, iccid, "1042")
    await until(sim, iccid, "1042")
    assert (await call(sim, "SuspendServiceDevice", device_id(iccid))).ok
    refused = await call(
        sim, "ChangeServiceDeviceProduct", device_id(iccid) + fields(ProductID="1043")
    )
    assert (refused.status, refused.ok, refused.code) == (200, False, 1005)
    assert [e["action"] for e in await ledger(sim, iccid)] == ["order", "activate", "deactivate"]
