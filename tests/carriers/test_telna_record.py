"""The Telna client reads what CARRIERS.md records, in every form it records (against a
stub carrier: no server, milliseconds)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from carriers.errors import CarrierOutcomeUnknown
from carriers.telna import NOT_PUBLIC, UNIT_SECONDS, TelnaCarrier, parse_time

ICCID = "8944000000000000001"
TEMPLATE = {
    "id": 21145354,
    "name": "Daily 1 GB",
    "data_usage_allowance": 1_000_000_000,
    "time_allowance": {"duration": 1, "unit": "DAY"},
    "activation_type": "MANUAL",
    "traffic_policy": 3,
}


def package(**fields: Any) -> dict[str, Any]:
    return {
        "id": 456789,
        "sim": ICCID,
        "package_template": 21145354,
        "status": "NOT_ACTIVE",
        "created_date": 1761330317000,
        "activated_date": 0,
        "expiry_date": 0,
        "terminated_date": 0,
        "data_usage_remaining": 1_000_000_000,
        "time_allowance": 86_400,
    } | fields


class StubTelna:
    """Answers from a table by path; remembers each request."""

    def __init__(self, answers: dict[str, Any]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path.removeprefix("/v2.1")
        answer = self.answers.get(f"{request.method} {path}")
        if callable(answer):
            answer = answer(request)
        if answer is None:
            return httpx.Response(404, json={"error": f"no route {path}"})
        status = 201 if request.method == "POST" and path == "/pcr/packages" else 200
        return httpx.Response(status, json=answer)


def client(stub: StubTelna, **options: Any) -> TelnaCarrier:
    return TelnaCarrier("http://telna", "key", transport=httpx.MockTransport(stub), **options)


@pytest.mark.parametrize(
    "value",
    [1761330317, 1761330317000, "1761330317000", "2025-10-24T18:25:17Z", "2025-10-24T18:25:17"],
)
def test_times_are_read_as_epoch_seconds_milliseconds_or_iso(value: object) -> None:
    assert parse_time(value) == datetime(2025, 10, 24, 18, 25, 17, tzinfo=UTC)


@pytest.mark.parametrize("value", [None, 0, "", "0"])
def test_zero_or_nothing_is_not_yet(value: object) -> None:
    assert parse_time(value) is None


def test_every_recorded_time_unit_is_known() -> None:
    recorded = {"SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH", "CALENDAR_MONTH", "YEAR"}
    assert set(UNIT_SECONDS) == recorded


async def test_a_package_reads_its_allowance_from_its_template_once() -> None:
    stub = StubTelna(
        {
            "GET /pcr/packages/456789": package(
                status="ACTIVE",
                activated_date="2025-10-24T18:30:00Z",
                expiry_date=1761417000,
                data_usage_remaining=250_000_000,
            ),
            "GET /pcr/package-templates/21145354": TEMPLATE,
        }
    )
    telna = client(stub)
    line = await telna.get_line("456789")
    again = await telna.usage("456789")
    await telna.aclose()
    assert (line.status, line.allowance_bytes, line.used_bytes) == ("active", 10**9, 750_000_000)
    assert line.carrier_product_id == "21145354" and line.reference is None
    assert line.activated_at == datetime(2025, 10, 24, 18, 30, tzinfo=UTC)
    assert line.ends_at == datetime(2025, 10, 25, 18, 30, tzinfo=UTC)
    assert again.used_bytes == 750_000_000
    paths = [r.url.path for r in stub.requests]
    assert paths.count("/v2.1/pcr/package-templates/21145354") == 1


async def test_a_suspended_package_serves_nothing() -> None:
    stub = StubTelna(
        {
            "GET /pcr/packages/456789": package(status="SUSPENDED"),
            "GET /pcr/package-templates/21145354": TEMPLATE,
        }
    )
    telna = client(stub)
    assert (await telna.get_line("456789")).status == "ended"
    await telna.aclose()


async def test_templates_without_a_data_allowance_are_read_as_0_bytes_for_the_sync_to_skip() -> (
    None
):
    unlimited = TEMPLATE | {"id": 7, "data_usage_allowance": None}
    monthly = TEMPLATE | {"id": 8, "time_allowance": {"duration": 1, "unit": "CALENDAR_MONTH"}}
    page = {
        "total": 3,
        "offset": 0,
        "count": 3,
        "package_templates": [TEMPLATE, unlimited, monthly],
    }
    telna = client(StubTelna({"GET /pcr/package-templates": page}))
    products = await telna.list_products()
    await telna.aclose()
    assert [(p.carrier_product_id, p.allowance_bytes, p.validity_seconds) for p in products] == [
        ("21145354", 10**9, 86_400),
        ("7", 0, 86_400),
        ("8", 10**9, 31 * 86_400),
    ]


async def test_an_order_sends_the_recorded_body_and_reads_back_nothing_invented() -> None:
    stub = StubTelna(
        {
            "POST /pcr/packages": package(),
            "GET /pcr/package-templates/21145354": TEMPLATE,
        }
    )
    telna = client(stub)
    line = await telna.order(ICCID, "21145354", "bal:1")
    await telna.aclose()
    body = json.loads(stub.requests[0].content)
    assert body["sim"] == ICCID and body["package_template"] == 21145354
    assert not {"activation_type", "start_at"} & set(body)
    assert (line.line_id, line.status) == ("456789", "scheduled")


async def test_an_order_whose_template_cannot_be_read_is_an_unknown_outcome() -> None:
    stub = StubTelna({"POST /pcr/packages": package()})  # the template read answers 404
    telna = client(stub)
    with pytest.raises(CarrierOutcomeUnknown):
        await telna.order(ICCID, "21145354", "bal:1")
    await telna.aclose()


async def test_activation_and_termination_use_the_named_calls_and_read_back() -> None:
    stub = StubTelna(
        {
            "POST /pcr/packages/456789/activate": True,
            "POST /pcr/packages/456789/terminate": True,
            "GET /pcr/packages/456789": package(),
            "GET /pcr/package-templates/21145354": TEMPLATE,
        }
    )
    telna = client(stub)
    await telna.activate("456789")
    await telna.deactivate("456789")
    await telna.aclose()
    posts = [r.url.path for r in stub.requests if r.method == "POST"]
    assert posts == [
        "/v2.1" + NOT_PUBLIC.activate.format(id="456789"),
        "/v2.1" + NOT_PUBLIC.terminate.format(id="456789"),
    ]


@pytest.mark.parametrize(("scheme", "header"), [("raw", "key"), ("bearer", "Bearer key")])
async def test_the_auth_scheme_is_a_setting(scheme: str, header: str) -> None:
    page = {"total": 0, "offset": 0, "count": 0, "package_templates": []}
    stub = StubTelna({"GET /pcr/package-templates": page})
    telna = client(stub, auth_scheme=scheme)
    await telna.list_products()
    await telna.aclose()
    assert stub.requests[0].headers["Authorization"] == header


async def test_looking_for_open_packages_reads_only_open_ones_of_the_template() -> None:
    def listed(request: httpx.Request) -> dict[str, Any]:
        status = request.url.params["status"]
        found = [package(status=status, id=1 if status == "ACTIVE" else 2)]
        return {"total": 1, "offset": 0, "count": 1, "packages": found}

    stub = StubTelna({"GET /pcr/packages": listed, "GET /pcr/package-templates/21145354": TEMPLATE})
    telna = client(stub)
    lines = await telna.open_lines(ICCID, "21145354")
    await telna.aclose()
    assert sorted(line.line_id for line in lines) == ["1", "2"]
    queries = [dict(r.url.params) for r in stub.requests if r.url.path.endswith("/packages")]
    assert {q["status"] for q in queries} == {"NOT_ACTIVE", "ACTIVE"}
    assert all(q["sim"] == ICCID and q["package_template"] == "21145354" for q in queries)
