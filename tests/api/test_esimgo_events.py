"""eSIM Go's usage callbacks: a signed alert of one of our lines becomes one
``usage_reported`` signal to its balance, however often it comes; a bad signature is
refused and changes nothing; alerts of lines we do not hold and other notices are
answered and counted. Last, the eSIM Go simulator's own callbacks reach the workflow."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowHandle

from api.routes.esimgo_events import dedupe_value
from carriers.esimgo import EsimGoCarrier
from carriers.esimgo_events import parse_callback
from models.db import session_scope
from models.payloads import BalanceState
from models.tables import BalanceLine, Esim, Product
from services.enrolment import EnrolRequest, register, start_workflow, workflow_id
from simulators.esimgo import create_app as create_esimgo
from tests.api.conftest import Api, new_iccid, product
from tests.servers import serve

EVENTS = "/v1/carriers/esimgo/events"
KEY = "esimgo-api-test-key"
BUNDLE = "esim_60MB_600S_SIM"
PRODUCT = f"esimgo-{BUNDLE}"


@dataclass
class Held:
    """An open eSIM Go balance, its workflow started, holding line 1."""

    iccid: str
    balance_id: str
    line_id: str
    assignment_id: str
    state: BalanceState


def hold_esimgo_line(api: Api, iccid: str, assignment_id: str, seq: int = 1) -> Held:
    """A balance of ``iccid`` on eSIM Go holding line ``seq``: the assignment of the bundle."""
    url = api.settings.database_url
    with session_scope(url) as session:
        if session.get(Product, PRODUCT) is None:
            session.add(product("esimgo", BUNDLE, 600))
        session.add(Esim(iccid=iccid, carrier="esimgo"))
    state, _ = register(url, EnrolRequest(iccid=iccid, carrier="esimgo", product_id=PRODUCT), "t")
    line_id = f"{iccid}:{BUNDLE}:{assignment_id}"
    with session_scope(url) as session:
        session.add(
            BalanceLine(
                balance_id=state.balance_id,
                seq=seq,
                iccid=iccid,
                carrier="esimgo",
                carrier_line_id=line_id,
                reference=f"{state.balance_id}:{seq}",
                product_id=PRODUCT,
                state="active",
                allowance_bytes=60_000_000,
            )
        )
    return Held(iccid, state.balance_id, line_id, assignment_id, state)


@pytest.fixture(scope="module")
async def held(api: Api) -> AsyncIterator[Held]:
    api.settings.esimgo.api_key = SecretStr(KEY)  # read per request
    found = hold_esimgo_line(api, new_iccid(), "215009266")
    await start_workflow(api.temporal, api.settings.task_queue, found.state)
    yield found
    await api.temporal.get_workflow_handle(workflow_id(found.iccid)).terminate("test over")


def alert(
    iccid: str,
    assignment_id: str,
    remaining: int,
    alert_type: str = "Utilisation",
    bundle: str = BUNDLE,
) -> bytes:
    """A V3 usage callback as the record shows one."""
    return json.dumps(
        {
            "iccid": iccid,
            "alertType": alert_type,
            "bundle": {
                "id": assignment_id,
                "reference": "",
                "name": bundle,
                "description": "eSIM, 60MB, 600 Seconds, SIM",
                "initialQuantity": 60_000_000,
                "remainingQuantity": remaining,
                "startTime": "2026-12-07T08:00:00Z",
                "endTime": "2026-12-07T08:10:00Z",
                "unlimited": False,
            },
        }
    ).encode()


def signed(body: bytes, key: str = KEY, encoding: str = "hex") -> dict[str, str]:
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    value = digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()
    return {"Content-Type": "application/json", "X-Signature-SHA256": value}


async def signals(api: Api, iccid: str) -> list[tuple[str, dict[str, Any]]]:
    """Name and payload of every signal in the balance's workflow history."""
    handle: WorkflowHandle[object, object] = api.temporal.get_workflow_handle(workflow_id(iccid))
    found = []
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_signaled_event_attributes"):
            attrs = event.workflow_execution_signaled_event_attributes
            found.append((attrs.signal_name, json.loads(attrs.input.payloads[0].data)))
    return found


async def counted(api: Api) -> dict[str, float]:
    """``esim_api_esimgo_events_total`` by outcome."""
    text = (await api.http.get("/metrics")).text
    pattern = r'^esim_api_esimgo_events_total\{outcome="(\w+)"\} (\S+)$'
    return {m[1]: float(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


def more(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k, 0.0)}


async def post(api: Api, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await api.http.post(EVENTS, content=body, headers=headers)


@pytest.mark.parametrize("encoding", ["hex", "base64"])
async def test_a_signed_alert_becomes_one_usage_signal_to_the_line_of_its_assignment(
    api: Api, held: Held, encoding: str
) -> None:
    before, metrics = await signals(api, held.iccid), await counted(api)
    remaining = 30_000_000 - len(encoding)  # a new alert for each encoding
    body = alert(held.iccid, held.assignment_id, remaining)

    response = await post(api, body, signed(body, encoding=encoding))

    assert response.status_code == 200, response.text
    assert response.content == b""
    [(name, report)] = (await signals(api, held.iccid))[len(before) :]
    assert name == "usage_reported"
    assert (report["seq"], report["used_bytes"]) == (1, 60_000_000 - remaining)
    assert report["reference"] == f"{held.balance_id}:1"
    assert more(await counted(api), metrics) == {"signalled": 1.0}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Signature-SHA256": ""},
        {"X-Signature-SHA256": "00" * 32},
        {"X-Signature-SHA256": "not a digest"},
    ],
    ids=["missing", "empty", "wrong", "garbage"],
)
async def test_a_bad_or_missing_signature_is_refused_and_changes_nothing(
    api: Api, held: Held, headers: dict[str, str]
) -> None:
    before, database, metrics = await signals(api, held.iccid), api.database(), await counted(api)
    body = alert(held.iccid, held.assignment_id, 1_000)

    response = await post(api, body, {"Content-Type": "application/json", **headers})

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "bad_signature"
    assert await signals(api, held.iccid) == before
    assert api.database() == database
    assert more(await counted(api), metrics) == {"rejected": 1.0}


async def test_signed_with_another_key_or_over_another_body_is_refused(
    api: Api, held: Held
) -> None:
    before = await signals(api, held.iccid)
    body = alert(held.iccid, held.assignment_id, 2_000)
    other = alert(held.iccid, held.assignment_id, 2_001)
    for headers in (signed(body, key="another-key"), signed(other)):
        assert (await post(api, body, headers)).status_code == 401
    assert await signals(api, held.iccid) == before


async def test_a_repeated_alert_signals_once_even_resent_in_other_bytes(
    api: Api, held: Held
) -> None:
    before, metrics = await signals(api, held.iccid), await counted(api)
    body = alert(held.iccid, held.assignment_id, 12_000_000)
    resent = json.dumps(json.loads(body), indent=2, sort_keys=True).encode()
    assert dedupe_value(parse_callback(body)) == dedupe_value(parse_callback(resent))

    first = await post(api, body, signed(body))
    again = await post(api, body, signed(body, encoding="base64"))
    third = await post(api, resent, signed(resent))

    assert [r.status_code for r in (first, again, third)] == [200, 200, 200]
    assert len(await signals(api, held.iccid)) == len(before) + 1
    assert more(await counted(api), metrics) == {"signalled": 1.0, "duplicate": 2.0}


async def test_concurrent_repeats_signal_once(api: Api, held: Held) -> None:
    before = await signals(api, held.iccid)
    body = alert(held.iccid, held.assignment_id, 6_000_000)
    responses = await asyncio.gather(*(post(api, body, signed(body)) for _ in range(6)))
    assert {r.status_code for r in responses} == {200}
    assert len(await signals(api, held.iccid)) == len(before) + 1


async def test_alerts_of_lines_we_do_not_hold_are_answered_and_counted(
    api: Api, held: Held
) -> None:
    before, metrics = await signals(api, held.iccid), await counted(api)
    strangers = [
        alert(held.iccid, "999999999", 1_000),  # another assignment of the same bundle
        alert(held.iccid, held.assignment_id, 1_000, bundle="esim_1GB_1D_GB_V2"),
        alert(new_iccid(), held.assignment_id, 1_000),
    ]
    for body in strangers:
        response = await post(api, body, signed(body))
        assert (response.status_code, response.content) == (200, b"")
    assert await signals(api, held.iccid) == before
    assert more(await counted(api), metrics) == {"ignored": 3.0}


async def test_an_esim_deleted_notice_is_logged_and_counted_without_a_signal(
    api: Api, held: Held
) -> None:
    before, database, metrics = await signals(api, held.iccid), api.database(), await counted(api)
    body = json.dumps(
        {"date": "2026-12-07T08:00:00Z", "event": "esim.deleted", "iccid": held.iccid}
    ).encode()

    response = await post(api, body, signed(body))

    assert (response.status_code, response.content) == (200, b"")
    assert await signals(api, held.iccid) == before
    assert api.database() == database
    assert more(await counted(api), metrics) == {"notice": 1.0}


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"iccid": "1", "alertType": "Sideways", "bundle": {"id": "1"}}'],
    ids=["not-json", "not-an-object", "unknown-alert"],
)
async def test_a_signed_body_that_is_no_callback_is_a_bad_request(
    api: Api, held: Held, body: bytes
) -> None:
    response = await post(api, body, signed(body))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_event"


async def test_the_simulators_callbacks_reach_the_balance_of_the_line(api: Api, held: Held) -> None:
    """The eSIM Go simulator, sharing the API's key, posts its signed callbacks to the
    route: each alert of an assignment we hold becomes one signal to its balance."""
    app = create_esimgo(KEY, f"{api.url}{EVENTS}", seed=4, activation_latency=(0.0, 0.0))
    with serve(app) as sim_url:
        iccid = new_iccid()
        async with httpx.AsyncClient(base_url=f"{sim_url}/_sim") as control:
            (await control.post("/esims", json={"iccids": [iccid]})).raise_for_status()
            carrier = EsimGoCarrier(f"{sim_url}/v2.4", KEY)
            try:
                line = await carrier.order(iccid, BUNDLE, "unused")
            finally:
                await carrier.aclose()
            assignment = line.line_id.rsplit(":", 1)[1]
            ours = hold_esimgo_line(api, iccid, assignment)
            assert ours.line_id == line.line_id
            await start_workflow(api.temporal, api.settings.task_queue, ours.state)
            try:
                # 60 MB at 100 MB/s: FirstUse, then 50, 80 and 100 % within a second.
                traffic = {"iccid": iccid, "bytes_per_second": 100_000_000}
                (await control.post("/traffic", json=traffic)).raise_for_status()
                deadline = time.monotonic() + 45
                while len(found := await signals(api, iccid)) < 4:
                    assert time.monotonic() < deadline, f"signals so far: {found}"
                    await asyncio.sleep(0.2)
            finally:
                await api.temporal.get_workflow_handle(workflow_id(iccid)).terminate("over")
    assert {name for name, _ in found} == {"usage_reported"}
    used = [report["used_bytes"] for _, report in found]
    assert used == sorted(used) and used[-1] == 60_000_000
    assert {report["reference"] for _, report in found} == {f"{ours.balance_id}:1"}
