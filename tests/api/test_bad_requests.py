"""Every bad request gets its 4xx in the one error shape and changes nothing: not a row in
the database, not a workflow or a history event in Temporal."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.api.conftest import Api, new_iccid, raw_delivery, telna_event, valid_eid

OP = "operator"
SVC = "service"
_GOOD = new_iccid()
BAD_LUHN = _GOOD[:-1] + str((int(_GOOD[-1]) + 1) % 10)  # one ICCID, its check digit off
GOOD_EID = valid_eid()
BAD_EID = GOOD_EID[:-1] + str((int(GOOD_EID[-1]) + 1) % 10)
BIG = "x" * (70 * 1024)


@dataclass
class Bad:
    """One bad request: what to send, and the status and error code it must get."""

    name: str
    method: str
    path: str  # {balance}, {closed}, {iccid}, {free} are filled in from the seeded data
    status: int
    code: str
    body: Any = None  # JSON-encoded unless bytes; None: no body
    role: str | None = OP  # whose key; None: no Authorization header
    headers: dict[str, str] = field(default_factory=dict)
    # For webhooks: builds (body, headers) from the seeded data
    webhook: Callable[[Api], tuple[bytes, dict[str, str]]] | None = None


async def _stream(size: int) -> AsyncIterator[bytes]:
    for _ in range(size // 4096):
        yield b"x" * 4096


def _esim(**fields: Any) -> dict[str, Any]:
    return {"iccid": new_iccid(), "carrier": "telna", **fields}


def _balance(**fields: Any) -> dict[str, Any]:
    return {"iccid": "{free}", "product_id": "telna-daily-1gb", **fields}


def _wrapped(
    envelope: dict[str, str] | None = None, resign: bool = False, **headers: str
) -> Callable[[Api], tuple[bytes, dict[str, str]]]:
    """A usage alert of the open balance's line as SNS wraps it, with ``envelope``'s
    fields changed (after signing, unless ``resign``) and ``headers`` added."""

    def build(api: Api) -> tuple[bytes, dict[str, str]]:
        body, sent = api.sns.wrapped(api.telna_event())
        changed = json.loads(body) | (envelope or {})
        if resign:
            changed = api.sns.signer.sign(changed, api.sns.url)
        return json.dumps(changed).encode(), sent | headers

    return build


def _raw(
    event: bytes | None = None, drop: str = "", **headers: str
) -> Callable[[Api], tuple[bytes, dict[str, str]]]:
    """A raw delivery (the open balance's usage alert unless ``event``), a header dropped
    or changed."""

    def build(api: Api) -> tuple[bytes, dict[str, str]]:
        body = event if event is not None else api.telna_event()
        sent = {k: v for k, v in (raw_delivery(body) | headers).items() if k != drop}
        return body, sent

    return build


_NEGATIVE = json.loads(telna_event("8944000000000000019", used=0))
_NEGATIVE["eventDetails"]["package"]["packageUsedBytes"] = -1
HOOK = "/v1/carriers/telna/events"
CASES = [
    # --- credentials and roles
    Bad("no key", "GET", "/v1/balances", 401, "unauthorized", role=None),
    Bad("no key enrol", "POST", "/v1/esims", 401, "unauthorized", body=_esim(), role=None),
    Bad("wrong key", "GET", "/v1/products", 401, "unauthorized", role=None,
        headers={"Authorization": "Bearer not-a-key"}),
    Bad("basic auth", "GET", "/v1/products", 401, "unauthorized", role=None,
        headers={"Authorization": "Basic b3BlcmF0b3I6eA=="}),
    Bad("empty bearer", "GET", "/v1/products", 401, "unauthorized", role=None,
        headers={"Authorization": "Bearer"}),
    Bad("sql key", "GET", "/v1/products", 401, "unauthorized", role=None,
        headers={"Authorization": "Bearer ' OR '1'='1"}),
    Bad("service pauses", "POST", "/v1/balances/{balance}/pause", 403, "forbidden", role=SVC),
    Bad("service cancels", "POST", "/v1/balances/{balance}/cancel", 403, "forbidden", role=SVC),
    Bad("service rotates", "POST", "/v1/balances/{balance}/rotate", 403, "forbidden", role=SVC),
    Bad("service patches", "PATCH", "/v1/balances/{balance}", 403, "forbidden", role=SVC,
        body={"product_id": "telna-daily-1gb"}),
    # --- eSIM registration
    Bad("iccid check digit", "POST", "/v1/esims", 422, "invalid_request", {"iccid": BAD_LUHN,
        "carrier": "telna"}),
    Bad("iccid 18 digits", "POST", "/v1/esims", 422, "invalid_request", _esim(iccid="8" * 18)),
    Bad("iccid 21 digits", "POST", "/v1/esims", 422, "invalid_request",
        _esim(iccid="89" * 10 + "1")),
    Bad("iccid not 89", "POST", "/v1/esims", 422, "invalid_request", _esim(iccid="1" * 19)),
    Bad("iccid letters", "POST", "/v1/esims", 422, "invalid_request",
        _esim(iccid="89440000000000000AB")),
    Bad("iccid unicode digits", "POST", "/v1/esims", 422, "invalid_request",
        _esim(iccid="٨٩٤٤٠٠٠٠٠٠٠٠٠٠٠٠٠١٩")),
    Bad("iccid sql", "POST", "/v1/esims", 422, "invalid_request",
        _esim(iccid="89'; DROP TABLE esim; --")),
    Bad("iccid as number", "POST", "/v1/esims", 422, "invalid_request",
        _esim(iccid=8944000000000000019)),
    Bad("eid mod 97", "POST", "/v1/esims", 422, "invalid_request", _esim(eid=BAD_EID)),
    Bad("eid 31 digits", "POST", "/v1/esims", 422, "invalid_request", _esim(eid=GOOD_EID[:-1])),
    Bad("unknown carrier", "POST", "/v1/esims", 422, "invalid_request", _esim(carrier="vodafone")),
    Bad("extra field", "POST", "/v1/esims", 422, "invalid_request", _esim(admin=True)),
    Bad("empty body", "POST", "/v1/esims", 422, "invalid_request", b"",
        headers={"Content-Type": "application/json"}),
    Bad("array body", "POST", "/v1/esims", 422, "invalid_request", []),
    Bad("null body", "POST", "/v1/esims", 422, "invalid_request", b"null",
        headers={"Content-Type": "application/json"}),
    Bad("broken json", "POST", "/v1/esims", 400, "invalid_json", b'{"iccid": ',
        headers={"Content-Type": "application/json"}),
    Bad("other carrier again", "POST", "/v1/esims", 409, "esim_conflict",
        {"iccid": "{free}", "carrier": "webbing"}),
    # --- starting a balance
    Bad("unknown product", "POST", "/v1/balances", 422, "unknown_product",
        _balance(product_id="telna-nope")),
    Bad("other carrier's product", "POST", "/v1/balances", 422, "carrier_mismatch",
        _balance(product_id="webbing-1042")),
    Bad("unicode product", "POST", "/v1/balances", 422, "unknown_product",
        _balance(product_id="télna-ünïcode-💥")),
    Bad("sql product", "POST", "/v1/balances", 422, "unknown_product",
        _balance(product_id="x'; DROP TABLE balance; --")),
    Bad("nul in product", "POST", "/v1/balances", 422, "invalid_request",
        _balance(product_id="telna-daily-1gb\u0000")),
    Bad("product id 97 chars", "POST", "/v1/balances", 422, "invalid_request",
        _balance(product_id="p" * 97)),
    Bad("zero lines", "POST", "/v1/balances", 422, "invalid_request", _balance(lines=0)),
    Bad("negative lines", "POST", "/v1/balances", 422, "invalid_request", _balance(lines=-3)),
    Bad("absurd lines", "POST", "/v1/balances", 422, "invalid_request", _balance(lines=10**12)),
    Bad("lines as string", "POST", "/v1/balances", 422, "invalid_request", _balance(lines="5")),
    Bad("lines as bool", "POST", "/v1/balances", 422, "invalid_request", _balance(lines=True)),
    Bad("lines as float", "POST", "/v1/balances", 422, "invalid_request", _balance(lines=1.5)),
    Bad("unregistered esim", "POST", "/v1/balances", 422, "unknown_esim",
        _balance(iccid=new_iccid())),
    Bad("policy extra field", "POST", "/v1/balances", 422, "invalid_request",
        _balance(policy={"turbo": True})),
    Bad("policy margin over lead", "POST", "/v1/balances", 422, "invalid_request",
        _balance(policy={"lead_seconds": 10, "margin_seconds": 20})),
    Bad("policy margin over default lead", "POST", "/v1/balances", 422, "invalid_policy",
        {"iccid": "{free}", "product_id": "telna-compressed-60s",
         "policy": {"margin_seconds": 30}}),
    Bad("policy negative fraction", "POST", "/v1/balances", 422, "invalid_request",
        _balance(policy={"switch_fraction": -0.5})),
    Bad("balance already open", "POST", "/v1/balances", 409, "balance_open",
        {"iccid": "{iccid}", "product_id": "telna-daily-1gb"}),
    Bad("idempotency key too long", "POST", "/v1/balances", 422, "invalid_request",
        _balance(product_id="telna-nope"), headers={"Idempotency-Key": "k" * 256}),
    Bad("idempotency key with space", "POST", "/v1/balances", 422, "invalid_request",
        _balance(), headers={"Idempotency-Key": "a b"}),
    Bad("oversized body", "POST", "/v1/balances", 413, "payload_too_large",
        _balance(product_id=BIG)),
    Bad("oversized chunked body", "POST", "/v1/esims", 413, "payload_too_large",
        _stream(80 * 1024), headers={"Content-Type": "application/json"}),
    # --- reading
    Bad("unknown state", "GET", "/v1/balances?state=Bogus", 422, "invalid_request"),
    Bad("limit 0", "GET", "/v1/balances?limit=0", 422, "invalid_request"),
    Bad("absurd limit", "GET", "/v1/balances?limit=1000000", 422, "invalid_request"),
    Bad("garbage cursor", "GET", "/v1/balances?cursor=bm90LWEtY3Vyc29y", 422, "invalid_cursor"),
    Bad("unknown carrier filter", "GET", "/v1/products?carrier=vodafone", 422, "invalid_request"),
    Bad("short iccid path", "GET", "/v1/esims/123", 422, "invalid_request"),
    Bad("iccid path check digit", "GET", f"/v1/esims/{BAD_LUHN}", 422, "invalid_request"),
    Bad("unknown esim", "GET", f"/v1/esims/{new_iccid()}", 404, "not_found"),
    Bad("unknown balance", "GET", "/v1/balances/bal_nope", 404, "not_found"),
    Bad("sql balance id", "GET", "/v1/balances/1%27%20OR%201=1", 422, "invalid_request"),
    Bad("unknown path", "GET", "/v1/nothing-here", 404, "not_found"),
    Bad("wrong method", "DELETE", "/v1/balances", 405, "method_not_allowed"),
    # --- changing a balance
    Bad("empty patch", "PATCH", "/v1/balances/{balance}", 422, "invalid_request", {}),
    Bad("patch unknown product", "PATCH", "/v1/balances/{balance}", 422, "unknown_product",
        {"product_id": "telna-nope"}),
    Bad("patch other carrier", "PATCH", "/v1/balances/{balance}", 422, "carrier_mismatch",
        {"product_id": "webbing-1042"}),
    Bad("patch product without allowance", "PATCH", "/v1/balances/{balance}", 422,
        "unsellable_product", {"product_id": "telna-empty"}),
    Bad("patch bad policy", "PATCH", "/v1/balances/{balance}", 422, "invalid_request",
        {"policy": {"preorder_fraction": 0.99, "switch_fraction": 0.5}}),
    Bad("patch policy too tight", "PATCH", "/v1/balances/{balance}", 422, "invalid_policy",
        {"policy": {"margin_seconds": 40, "lead_seconds": 50}}),
    Bad("patch extra field", "PATCH", "/v1/balances/{balance}", 422, "invalid_request",
        {"product_id": "telna-daily-1gb", "state": "Cancelled"}),
    Bad("patch unknown balance", "PATCH", "/v1/balances/bal_nope", 404, "not_found",
        {"product_id": "telna-daily-1gb"}),
    Bad("patch closed balance", "PATCH", "/v1/balances/{closed}", 409, "balance_closed",
        {"product_id": "telna-daily-1gb"}),
    Bad("pause unknown balance", "POST", "/v1/balances/bal_nope/pause", 404, "not_found"),
    Bad("pause closed balance", "POST", "/v1/balances/{closed}/pause", 409, "balance_closed"),
    Bad("pause extra field", "POST", "/v1/balances/{balance}/pause", 422, "invalid_request",
        {"reason": "x", "force": True}),
    Bad("pause reason too long", "POST", "/v1/balances/{balance}/pause", 422,
        "invalid_request", {"reason": "r" * 201}),
    # --- the Telna webhook (SNS)
    Bad("webhook bad signature", "POST", HOOK, 401, "bad_signature", role=None,
        webhook=_wrapped({"Signature": "c2lnbmF0dXJl"})),
    Bad("webhook tampered message", "POST", HOOK, 401, "bad_signature", role=None,
        webhook=_wrapped({"Message": telna_event("8944000000000000019", used=1).decode()})),
    Bad("webhook unknown signature version", "POST", HOOK, 401, "bad_signature", role=None,
        webhook=_wrapped({"SignatureVersion": "3"})),
    Bad("webhook certificate off the allow-list", "POST", HOOK, 401, "bad_signature",
        role=None, webhook=_wrapped({"SigningCertURL": "http://127.0.0.1:1/c.pem"})),
    Bad("webhook subscribe url off the allow-list", "POST", HOOK, 401, "bad_signature",
        role=None, webhook=_wrapped({"Type": "SubscriptionConfirmation", "Token": "t",
            "SubscribeURL": "http://127.0.0.1:1/confirm"}, resign=True,
            **{"x-amz-sns-message-type": "SubscriptionConfirmation"})),
    Bad("webhook raw without credentials", "POST", HOOK, 401, "unauthorized", role=None,
        webhook=_raw(drop="Authorization")),
    Bad("webhook raw under another secret", "POST", HOOK, 401, "unauthorized", role=None,
        webhook=_raw(Authorization="Basic dGVsbmE6Z3Vlc3NlZA==")),
    Bad("webhook not an envelope", "POST", HOOK, 400, "invalid_event", role=None,
        webhook=_wrapped({"Type": "Notice"})),
    Bad("webhook type header differs", "POST", HOOK, 400, "invalid_event", role=None,
        webhook=_wrapped(**{"x-amz-sns-message-type": "UnsubscribeConfirmation"})),
    Bad("webhook raw without message id", "POST", HOOK, 400, "invalid_event", role=None,
        webhook=_raw(drop="x-amz-sns-message-id")),
    Bad("webhook raw garbage", "POST", HOOK, 400, "invalid_event", role=None,
        webhook=_raw(b'{"eventName": "PACKAGE_DATA_USAGE_ALERT"}')),
    Bad("webhook negative usage", "POST", HOOK, 400, "invalid_event", role=None,
        webhook=_raw(json.dumps(_NEGATIVE).encode())),
]  # fmt: skip


def _fill(text: str, api: Api) -> str:
    return (
        text.replace("{balance}", api.balance_id)
        .replace("{closed}", api.closed_balance_id)
        .replace("{iccid}", api.balance_iccid)
        .replace("{free}", api.free_iccid)
    )


async def _send(api: Api, case: Bad) -> Any:
    headers = dict(case.headers)
    if case.role is not None:
        headers |= Api.auth(case.role)
    content: Any = None
    if case.webhook is not None:
        content, signed = case.webhook(api)
        headers |= signed
    elif isinstance(case.body, bytes | AsyncIterator):
        content = case.body
    elif case.body is not None:
        content = _fill(json.dumps(case.body), api).encode()
        headers.setdefault("Content-Type", "application/json")
    return await api.http.request(
        case.method, _fill(case.path, api), content=content, headers=headers
    )


def test_the_table_is_big_and_varied() -> None:
    assert len(CASES) >= 40
    assert len({case.name for case in CASES}) == len(CASES)
    assert {case.status for case in CASES} >= {400, 401, 403, 404, 405, 409, 413, 422}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
async def test_bad_request_is_refused_and_changes_nothing(api: Api, case: Bad) -> None:
    database, temporal = api.database(), await api.temporal_state()
    response = await _send(api, case)
    body = response.json()
    assert (response.status_code, body["error"]["code"]) == (case.status, case.code), body
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    assert body["error"]["message"] and "Traceback" not in response.text
    assert api.database() == database
    assert await api.temporal_state() == temporal


async def test_no_workflow_appeared_once_visibility_caught_up(api: Api) -> None:
    before = await api.temporal_state()
    for case in CASES[:12]:
        await _send(api, case)
    await asyncio.sleep(1.5)  # the workflow count comes from eventually consistent visibility
    assert await api.temporal_state() == before
    assert before[0] == 1  # only the seeded balance's workflow is on the task queue
