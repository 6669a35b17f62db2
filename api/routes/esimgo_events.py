"""eSIM Go's usage callbacks (V3): ``POST /v1/carriers/esimgo/events``.

eSIM Go posts each callback to the URL set in its portal, signed: ``X-Signature-SHA256``
is the HMAC-SHA256 of the raw body keyed with the organisation's API key
(``ESIMGO__API_KEY``), in hex or base64 (``carriers.esimgo_events``). A body whose
signature does not verify is refused (401) and nothing else happens. A usage alert of
one of our lines becomes a ``usage_reported`` signal to its balance, once per alert:
eSIM Go sends no event id, so an alert is known by its eSIM, assignment, type and
remaining quantity, kept in the idempotency store as Telna's MessageIds are. Alerts of
lines we do not hold, and of balances already closed, are answered and ignored; other
notices on the channel (``esim.deleted``) are logged and counted. The answer is an
empty 200: eSIM Go reads nothing from it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request, Response
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency
from api.deps import ClientDep, SettingsDep, TelemetryDep
from api.errors import ApiError, documented
from api.lookups import carrier_line
from carriers.esimgo_events import SIGNATURE_HEADER, UsageAlert, parse_callback, verify_signature
from config import Settings
from models.db import session_scope
from models.payloads import UsageReport
from services.enrolment import workflow_id

router = APIRouter(prefix="/v1/carriers", tags=["carrier webhooks"])

log = logging.getLogger("api")

CARRIER = "esimgo"
EVENT_SCOPE = "esimgo-event"
MAX_KEY = 255  # the idempotency store's key column
Outcome = Literal["signalled", "ignored", "duplicate"]

_CALLBACK_SCHEMA = {
    "oneOf": [
        {
            "title": "UsageCallback",
            "description": "V3 usage callback: FirstUse, or Utilisation at 1, 50, 80, 100 %.",
            "type": "object",
            "required": ["iccid", "alertType", "bundle"],
            "properties": {
                "iccid": {"type": "string"},
                "alertType": {"type": "string", "enum": ["FirstUse", "Utilisation"]},
                "bundle": {
                    "type": "object",
                    "required": ["id", "name", "initialQuantity", "remainingQuantity"],
                    "properties": {
                        "id": {"type": "string", "description": "the assignment id"},
                        "reference": {"type": "string"},
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "initialQuantity": {"type": "integer", "description": "bytes"},
                        "remainingQuantity": {"type": "integer", "description": "bytes"},
                        "startTime": {"type": "string", "format": "date-time"},
                        "endTime": {"type": "string", "format": "date-time"},
                        "unlimited": {"type": "boolean"},
                    },
                },
            },
        },
        {
            "title": "EsimNotice",
            "description": "Another notice on the channel, e.g. esim.deleted.",
            "type": "object",
            "required": ["event", "iccid"],
            "properties": {
                "event": {"type": "string"},
                "iccid": {"type": "string"},
                "date": {"type": "string"},
            },
        },
    ]
}


@dataclass(frozen=True)
class Target:
    """The line an alert is about, as the database holds it."""

    iccid: str
    seq: int
    reference: str


@router.post(
    "/esimgo/events",
    response_class=Response,
    responses={
        200: {"description": "Taken: acted on once, or about nothing of ours. No body."},
        **documented(400, 401, 413, 503),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _CALLBACK_SCHEMA}},
        }
    },
)
async def esimgo_event(
    request: Request,
    settings: SettingsDep,
    client: ClientDep,
    telemetry: TelemetryDep,
    x_signature_sha256: Annotated[
        str | None,
        Header(
            alias=SIGNATURE_HEADER,
            description="HMAC-SHA256 of the raw body keyed with ESIMGO__API_KEY, hex or base64",
        ),
    ] = None,
) -> Response:
    """eSIM Go usage callbacks (V3), verified by their signature: a usage alert of one of
    our lines becomes one ``usage_reported`` signal to its balance, however often it
    comes; ``esim.deleted`` and alerts of lines we do not hold are answered and ignored."""
    counter = telemetry.esimgo_events
    body = await request.body()
    key = settings.esimgo.api_key.get_secret_value()
    if not verify_signature(body, x_signature_sha256, key):
        counter.labels("rejected").inc()
        raise ApiError(401, "bad_signature", f"missing or wrong {SIGNATURE_HEADER}")
    try:
        callback = parse_callback(body)
    except ValueError as error:
        counter.labels("rejected").inc()
        raise ApiError(400, "invalid_event", str(error)) from None
    if not isinstance(callback, UsageAlert):
        log.info("eSIM Go notice %s for eSIM %s", callback.event, callback.iccid)
        counter.labels("notice").inc()
        return Response(status_code=200)
    outcome = await _once(settings, client, callback)
    counter.labels(outcome).inc()
    return Response(status_code=200)


def dedupe_value(alert: UsageAlert) -> str:
    """The alert's key in the idempotency store: its four values, or their digest should
    they not fit."""
    value = ":".join(str(part) for part in alert.dedupe_key)
    if len(value) > MAX_KEY:
        value = hashlib.sha256(value.encode()).hexdigest()
    return value


async def _once(settings: Settings, client: Client, alert: UsageAlert) -> Outcome:
    """The alert acted on once per dedupe key: a repeat, even with another body (a
    resend need not be byte for byte the same), is a duplicate."""

    async def deliver() -> idempotency.Answer:
        return 200, {"outcome": await _signal(settings, client, alert)}

    value = dedupe_value(alert)
    key = idempotency.Key(EVENT_SCOPE, "", value)
    try:
        _, content, replayed = await idempotency.run_once(
            settings.database_url, key, idempotency.fingerprint(value), deliver
        )
    except ApiError as error:
        if error.status != 409:
            raise
        replayed = True  # the same alert under way: still one
    if replayed:
        return "duplicate"
    outcome: Outcome = content["outcome"]
    return outcome


async def _signal(settings: Settings, client: Client, alert: UsageAlert) -> Outcome:
    """Usage of one of our lines becomes ``usage_reported``; the rest is ignored."""
    target = await run_in_threadpool(_target, settings.database_url, alert.line_id)
    if target is None:
        return "ignored"
    report = UsageReport(
        seq=target.seq,
        used_bytes=alert.used_bytes,
        observed_at=datetime.now(UTC),  # eSIM Go's alerts carry no time of their own
        reference=target.reference,
    )
    try:
        await client.get_workflow_handle(workflow_id(target.iccid)).signal("usage_reported", report)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise  # Temporal unreachable: 503, and eSIM Go may send it again
        return "ignored"  # the balance is closed: its lines no longer matter
    return "signalled"


def _target(url: str, line_id: str) -> Target | None:
    with session_scope(url) as session:
        line = carrier_line(session, CARRIER, line_id)
        if line is None:
            return None
        return Target(line.iccid, line.seq, line.reference)
