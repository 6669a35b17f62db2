"""What the Webbing-like simulator refuses: business errors in HTTP 200, SOAP Faults.

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
    enrolled,
    envelope,
    fields,
    ledger,
    new_iccid,
    order,
)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve(create_app(USERNAME, PASSWORD, WSKEY, seed=17)) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url) as client:
        yield client
        await client.post("/_sim/faults", json={})


async def test_business_errors_are_http_200_with_a_response_code(sim: httpx.AsyncClient) -> None:
    iccid = await enrolled(sim)
    other = await enrolled(sim)
    ended = await order(sim, iccid, "1042")
    await call(sim, "DeactivateServiceDeviceProduct", fields(ServiceDeviceProductID=ended))
    cases = [
        ("AddServiceDeviceProduct", fields(ICCID=new_iccid(), ProductID="1042"), 1002),
        ("AddServiceDeviceProduct", fields(ICCID=iccid, ProductID="7777"), 1003),
        ("AddServiceDeviceProduct", fields(ProductID="1042"), 1006),
        ("AddServiceDeviceProduct", fields(ICCID=iccid, ProductID="1042", StartAtUtc="soon"), 1006),
        (
            "AddServiceDeviceProduct",
            fields(ICCID=iccid, ProductID="1042", Reference="r" * 256),
            1006,
        ),
        ("GetServiceDeviceProduct", fields(ServiceDeviceProductID="123"), 1004),
        ("GetServiceDeviceProduct", fields(ServiceDeviceProductID=ended, ICCID=other), 1004),
        ("ActivateServiceDeviceProduct", fields(ServiceDeviceProductID=ended), 1005),
        ("GetOnlineDeviceUsage", "", 1006),
        ("GetDeviceUsage", fields(ICCID=iccid, FromDate="2026-01-01"), 1006),
    ]
    for method, body, code in cases:
        answer = await call(sim, method, body)
        assert (answer.status, answer.ok, answer.code) == (200, False, code), (method, body)
        assert answer.head["ResponseDescription"]
    assert [e["action"] for e in await ledger(sim, iccid)] == ["order", "cancel"]
    assert await ledger(sim, other) == []


async def test_wrong_or_missing_credentials_are_refused_with_1001(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    right = {"Username": USERNAME, "Password": PASSWORD, "WSKey": WSKEY}
    for wrong in (
        {**right, "Username": "someone"},
        {**right, "Password": "guess"},
        {**right, "WSKey": ""},
        {},
    ):
        body = fields(ICCID=iccid, ProductID="1042")
        answer = await call(sim, "AddServiceDeviceProduct", body, credentials=wrong)
        assert (answer.status, answer.ok, answer.code) == (200, False, 1001)
    assert await ledger(sim, iccid) == []


def hostile_envelopes(iccid: str) -> dict[str, tuple[str, str | None, str | None]]:
    """name → (raw envelope, endpoint, SOAPAction) of calls the service must not carry out."""
    good = envelope(
        "AddServiceDeviceProduct", fields(ICCID=iccid, ProductID="1042", Reference="b-6:1")
    )
    lol = "".join(
        f'<!ENTITY lol{n} "{"&lol" + str(n - 1) + ";" if n else "lol"}' * 10 + '">'
        for n in range(10)
    )
    with_dtd = good.replace("<soap:Envelope", f"<!DOCTYPE soap:Envelope [{lol}]><soap:Envelope")
    return {
        "billion laughs": (with_dtd.replace("b-6:1", "&lol9;"), None, None),
        "external entity": (
            good.replace(
                "<soap:Envelope",
                '<!DOCTYPE soap:Envelope [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
                "<soap:Envelope",
            ).replace("b-6:1", "&xxe;"),
            None,
            None,
        ),
        "plain DTD": (
            good.replace("<soap:Envelope", "<!DOCTYPE soap:Envelope><soap:Envelope"),
            None,
            None,
        ),
        "truncated": (good[: len(good) // 2], None, None),
        "not XML": ("ICCID=1&ProductID=1042", None, None),
        "not an envelope": (f'<AddServiceDeviceProduct xmlns="{WWS_NS}"/>', None, None),
        "oversized": (good.replace("b-6:1", "r" * 70_000), None, None),
        "wrong SOAPAction": (good, None, f'"{WWS_NS}GetServiceDeviceProduct"'),
        "no SOAPAction": (good, None, ""),
        "method of another endpoint": (good, "/accounts/Accounts.asmx", None),
    }


async def test_hostile_or_broken_envelopes_get_a_soap_fault_and_change_nothing(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    for name, (raw, endpoint, action) in hostile_envelopes(iccid).items():
        answer = await call(
            sim, "AddServiceDeviceProduct", raw=raw, endpoint=endpoint, action=action
        )
        assert answer.status == 500, name
        assert answer.fault is not None and answer.fault["faultcode"] == "soap:Client", name
        assert answer.fault["faultstring"], name
    assert await ledger(sim, iccid) == []
    # the same call, well-formed, is carried out
    assert (
        await call(
            sim, "AddServiceDeviceProduct", raw=hostile_envelopes(iccid)["wrong SOAPAction"][0]
        )
    ).ok
    assert len(await ledger(sim, iccid)) == 1
