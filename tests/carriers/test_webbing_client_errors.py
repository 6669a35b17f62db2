"""WebbingCarrier against a stub carrier: the error tree, hostile XML, and what it sends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from xml.etree import ElementTree

import pytest
from fastapi import FastAPI, Request, Response

from carriers.errors import (
    CarrierError,
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
)
from carriers.webbing import WIRE, WebbingCarrier
from tests.servers import serve

SOAP = "http://schemas.xmlsoap.org/soap/envelope/"
WWS = "http://wws.iamwebbing.com/"
WRITE, READ = "ChangeServiceDeviceProduct", "GetServiceDevices"
ICCID = "8944000000000000001"
OK = (
    "<Success>true</Success><ResponseCode>0</ResponseCode>"
    "<ResponseDescription>OK</ResponseDescription>"
)
DEVICE = (
    "<ServiceDevices><ServiceDeviceRecord><ServiceDeviceID>700001</ServiceDeviceID>"
    "<ICCID>8944000000000000001</ICCID><StatusID>3</StatusID><StatusName>Active</StatusName>"
    "<ProductID>1042</ProductID><ProductName>Daily 1 GB</ProductName>"
    "<DataUsage>12.5</DataUsage><UpdatedAtUtc>03/11/2026</UpdatedAtUtc>"
    "<StatusDateChange>03/10/2026</StatusDateChange></ServiceDeviceRecord></ServiceDevices>"
    "<PaginationResponse><TotalRecords>1</TotalRecords><TotalPages>1</TotalPages>"
    "</PaginationResponse>"
)
PRODUCTS = (
    "<Products><ProductRecord><ProductID>1042</ProductID><ProductName>Daily 1 GB</ProductName>"
    "<DailyHighSpeedMB>1000</DailyHighSpeedMB><ValidityHours>24</ValidityHours>"
    "</ProductRecord></Products>"
    "<PaginationResponse><TotalRecords>1</TotalRecords><TotalPages>1</TotalPages>"
    "</PaginationResponse>"
)


def envelope(content: str, doctype: str = "") -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>{doctype}<soap:Envelope xmlns:soap="{SOAP}">'
        f"<soap:Body>{content}</soap:Body></soap:Envelope>"
    ).encode()


def result(method: str, inner: str, doctype: str = "") -> bytes:
    return envelope(
        f'<{method}Response xmlns="{WWS}"><{method}Result>{inner}</{method}Result>'
        f"</{method}Response>",
        doctype,
    )


def failure(code: int, description: str) -> Callable[[str], bytes]:
    head = f"<Success>false</Success><ResponseCode>{code}</ResponseCode>"
    return lambda method: result(
        method, f"{head}<ResponseDescription>{description}</ResponseDescription>"
    )


def soap_fault(code: str) -> Callable[[str], bytes]:
    detail = f"<faultcode>{code}</faultcode><faultstring>it went wrong</faultstring>"
    return lambda method: envelope(f"<soap:Fault>{detail}</soap:Fault>")


def fixed(body: bytes) -> Callable[[str], bytes]:
    return lambda method: body


class Stub:
    """A carrier answering every call with the reply set by the test; counts entity fetches."""

    def __init__(self) -> None:
        self.status = 200
        self.reply: Callable[[str], bytes] = fixed(b"")
        self.headers: dict[str, str] = {}
        self.seen: list[tuple[str, dict[str, str], bytes]] = []
        self.fetched = 0
        self.app = FastAPI()
        self.app.post("/{path:path}")(self.answer)
        self.app.get("/leak/{name}")(self.leak)

    async def answer(self, request: Request) -> Response:
        body = await request.body()
        self.seen.append((request.url.path, dict(request.headers), body))
        method = request.headers.get("soapaction", "").strip('"').rpartition("/")[2]
        return Response(self.reply(method), self.status, self.headers, media_type="text/xml")

    async def leak(self, name: str) -> Response:
        self.fetched += 1
        return Response('<!ENTITY leaked "secret">', media_type="text/plain")


@pytest.fixture(scope="module")
def stub_server() -> Iterator[tuple[Stub, str]]:
    stub = Stub()
    with serve(stub.app) as url:
        yield stub, url


@pytest.fixture
def stub(stub_server: tuple[Stub, str]) -> Iterator[tuple[Stub, WebbingCarrier]]:
    carrier_stub, url = stub_server
    carrier_stub.status, carrier_stub.headers, carrier_stub.seen = 200, {}, []
    yield carrier_stub, WebbingCarrier(url, "user", "pass", "key", timeout=2.0)


async def attempt(carrier: WebbingCarrier, method: str) -> CarrierError:
    """The product change an order makes, or the device read every line read makes."""
    try:
        if method == WRITE:
            change = {"ServiceDeviceIdentifier": {"ICCID": ICCID}, "ProductID": "1042"}
            await carrier._call(WRITE, change, True)
        else:
            await carrier.find_lines(ICCID)
    except CarrierError as error:
        return error
    finally:
        await carrier.aclose()
    raise AssertionError("no error raised")


def http_date(seconds_ahead: int) -> str:
    return format_datetime(datetime.now(UTC) + timedelta(seconds=seconds_ahead), usegmt=True)


@pytest.mark.parametrize(
    ("method", "status", "reply", "headers", "expected"),
    [
        (READ, 500, fixed(b""), {}, CarrierUnavailable),
        (WRITE, 500, fixed(b""), {}, CarrierOutcomeUnknown),
        (READ, 502, fixed(b"Bad Gateway"), {}, CarrierUnavailable),
        (WRITE, 502, fixed(b"Bad Gateway"), {}, CarrierOutcomeUnknown),
        (READ, 504, fixed(b""), {}, CarrierUnavailable),
        (WRITE, 504, fixed(b""), {}, CarrierOutcomeUnknown),
        (WRITE, 503, fixed(b""), {"Retry-After": "7"}, CarrierUnavailable),
        (READ, 429, fixed(b""), {"Retry-After": "date+30"}, CarrierUnavailable),
        (WRITE, 200, failure(1000, "General error"), {}, CarrierUnavailable),
        (READ, 200, failure(1000, "General error"), {}, CarrierUnavailable),
        (WRITE, 200, failure(1003, "Product not found"), {}, CarrierRejected),
        (READ, 200, failure(1002, "Device not found"), {}, CarrierRejected),
        (WRITE, 500, soap_fault("soap:Client"), {}, CarrierRejected),
        (WRITE, 500, soap_fault("soap:Server"), {}, CarrierOutcomeUnknown),
        (READ, 500, soap_fault("soap:Server"), {}, CarrierUnavailable),
        (WRITE, 200, fixed(b"<html>maintenance</html>"), {}, CarrierOutcomeUnknown),
        (READ, 200, fixed(envelope("<Other/>")), {}, CarrierUnavailable),
        (
            WRITE,
            200,
            lambda m: result(m, "<ResponseCode>0</ResponseCode>"),
            {},
            CarrierOutcomeUnknown,
        ),
        (READ, 404, fixed(b"Not Found"), {}, CarrierRejected),
    ],
)
async def test_answers_map_to_the_error_tree(
    stub: tuple[Stub, WebbingCarrier],
    method: str,
    status: int,
    reply: Callable[[str], bytes],
    headers: dict[str, str],
    expected: type[CarrierError],
) -> None:
    carrier_stub, carrier = stub
    if headers.get("Retry-After") == "date+30":
        headers = {"Retry-After": http_date(30)}
    carrier_stub.status, carrier_stub.reply, carrier_stub.headers = status, reply, headers
    error: Any = await attempt(carrier, method)
    assert type(error) is expected, error
    if "Retry-After" in headers:
        assert error.retry_after == pytest.approx(7 if status == 503 else 30, abs=2)
    if expected is CarrierRejected:
        body = reply(method)
        if b"soap:Client" in body:
            assert (error.code, error.message) == ("soap:Client", f"{WRITE}: it went wrong")
        elif status == 200:
            code = ElementTree.fromstring(body).findtext(f".//{{{WWS}}}ResponseCode")
            assert error.code == code and error.message.endswith("not found")
        else:
            assert error.code == str(status)


BILLION_LAUGHS = "".join(
    f'<!ENTITY lol{n} "{("&lol" + str(n - 1) + ";") * 10 if n else "lol"}">' for n in range(10)
)


def hostile(url: str) -> dict[str, tuple[Callable[[str], bytes], str]]:
    """name → (reply, what the error says) of answers no parser may act on."""
    answer = OK + DEVICE
    return {
        "billion laughs": (
            lambda m: result(
                m, answer.replace("1042", "&lol9;"), f"<!DOCTYPE x [{BILLION_LAUGHS}]>"
            ),
            "unsafe XML refused",
        ),
        "external entity": (
            lambda m: result(
                m,
                answer.replace("1042", "&xxe;"),
                f'<!DOCTYPE x [<!ENTITY xxe SYSTEM "{url}/leak/entity">]>',
            ),
            "unsafe XML refused",
        ),
        "external DTD": (
            lambda m: result(m, answer, f'<!DOCTYPE x SYSTEM "{url}/leak/dtd">'),
            "unsafe XML refused",
        ),
        "internal DTD": (lambda m: result(m, answer, "<!DOCTYPE x []>"), "unsafe XML refused"),
        "truncated envelope": (lambda m: result(m, answer)[:-60], "malformed XML"),
        "oversized answer": (lambda m: result(m, answer + " " * 5_000_000), "answer over"),
    }


@pytest.mark.parametrize(
    "name",
    [
        "billion laughs",
        "external entity",
        "external DTD",
        "internal DTD",
        "truncated envelope",
        "oversized answer",
    ],
)
@pytest.mark.parametrize("method", [WRITE, READ])
async def test_hostile_or_broken_xml_is_refused_with_a_clear_error(
    stub_server: tuple[Stub, str], stub: tuple[Stub, WebbingCarrier], name: str, method: str
) -> None:
    carrier_stub, carrier = stub
    reply, says = hostile(stub_server[1])[name]
    carrier_stub.reply = reply
    fetched = carrier_stub.fetched
    started = time.monotonic()
    error = await attempt(carrier, method)
    assert type(error) is (CarrierOutcomeUnknown if method == WRITE else CarrierUnavailable)
    assert says in error.message and method in error.message
    assert carrier_stub.fetched == fetched  # nothing was fetched from outside
    assert time.monotonic() - started < 2  # nothing was expanded


async def test_the_same_answer_without_the_attack_is_read(
    stub: tuple[Stub, WebbingCarrier],
) -> None:
    carrier_stub, carrier = stub
    carrier_stub.reply = lambda m: result(m, OK + (PRODUCTS if m == "GetProductsList" else DEVICE))
    try:
        [line] = await carrier.find_lines(ICCID)
    finally:
        await carrier.aclose()
    # In effect since 03/11/2026 (a bare date counts from 00:00 UTC): a day's pass long
    # run out, its 12.5 MB read as bytes.
    assert (line.status, line.used_bytes, line.allowance_bytes) == ("ended", 12_500_000, 10**9)
    assert line.activated_at == datetime(2026, 3, 11, tzinfo=UTC)
    assert line.ends_at == datetime(2026, 3, 12, tzinfo=UTC) and line.reference is None
    assert line.line_id == f"{ICCID}:1042:e{int(line.activated_at.timestamp() * 1000)}"


async def test_every_method_goes_to_its_endpoint_with_action_credentials_and_wrapper(
    stub: tuple[Stub, WebbingCarrier],
) -> None:
    carrier_stub, carrier = stub
    carrier_stub.status, carrier_stub.reply = 200, failure(1002, "nothing here")
    params = {"ServiceDeviceIdentifier": {"ICCID": "b<&>"}}
    try:
        for method in WIRE.endpoints:
            with pytest.raises(CarrierRejected):
                await carrier._call(method, params, False)
    finally:
        await carrier.aclose()
    assert [path for path, _, _ in carrier_stub.seen] == list(WIRE.endpoints.values())
    for (_, headers, body), method in zip(carrier_stub.seen, WIRE.endpoints, strict=True):
        assert headers["soapaction"] == f"{WWS}{method}"  # unquoted, as the record sends it
        assert headers["content-type"].startswith("text/xml")
        root = ElementTree.fromstring(body)
        credentials = root.find(f"{{{SOAP}}}Header/{{{WWS}}}Credentials")
        assert credentials is not None
        assert [(c.tag.rpartition("}")[2], c.text) for c in credentials] == [
            ("Username", "user"),
            ("Password", "pass"),
            ("WSKey", "key"),
        ]
        wrapped = root.find(f"{{{SOAP}}}Body/{{{WWS}}}{method}/{{{WWS}}}{method}Request")
        assert wrapped is not None
        assert wrapped.findtext(f"{{{WWS}}}ServiceDeviceIdentifier/{{{WWS}}}ICCID") == "b<&>"
