"""Carrier webhooks: authenticated by the carrier's signature, not by an API key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency, sns, telna_events
from api.deps import ClientDep, SettingsDep, TelemetryDep
from api.errors import ApiError, documented
from api.lookups import carrier_line
from api.sns import Envelope, SnsClient
from api.telna_events import TelnaEvent
from config import Settings
from models.db import session_scope
from models.payloads import AuditNotice, LineState, UsageReport
from services.enrolment import workflow_id

router = APIRouter(prefix="/v1/carriers", tags=["carrier webhooks"])

EVENT_SCOPE = "telna-event"
Outcome = Literal["signalled", "ignored", "duplicate", "confirmed"]
# A termination acts only on a line the workflow may still hold: one ended by us (a
# switch, a pause) or by its window after a switch needs no signal, and each signal is
# one more event in the workflow's history.
HELD_STATES = frozenset({LineState.scheduled.value, LineState.active.value})
EXPIRY_SLACK = timedelta(seconds=1)  # Telna's expiry and our reading of it, both rounded
MAX_MESSAGE_ID = 128
_BASIC = {"WWW-Authenticate": 'Basic realm="telna-events"'}


def _inline(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with its local ``$defs`` substituted (the body is read raw, for its
    signature, so it is documented by hand, where a ``#/$defs`` reference would not resolve)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


class EventAck(BaseModel):
    """What became of an SNS message."""

    message_id: str
    outcome: Outcome


@dataclass(frozen=True)
class Target:
    """The line an event is about, as the database holds it."""

    iccid: str
    seq: int
    reference: str
    state: str
    ends_at: datetime | None

    def ends_early(self, at: datetime) -> bool:
        """Whether a termination at ``at`` ended the line before its window did: forced,
        or its data used up. One at its end is the expiry the workflow's own switch meets
        (a queued carrier starts the next line then): no news, and no signal."""
        return self.ends_at is None or at < self.ends_at - EXPIRY_SLACK


@router.post(
    "/telna/events",
    responses=documented(400, 401, 413, 502, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/plain": {
                    "schema": {
                        "oneOf": [
                            _inline(Envelope.model_json_schema(by_alias=True)),
                            _inline(TelnaEvent.model_json_schema(by_alias=True)),
                        ]
                    }
                }
            },
        }
    },
)
async def telna_event(
    request: Request,
    settings: SettingsDep,
    client: ClientDep,
    telemetry: TelemetryDep,
    x_amz_sns_message_type: Annotated[
        str | None, Header(description="Notification, SubscriptionConfirmation, ...")
    ] = None,
    x_amz_sns_message_id: Annotated[str | None, Header(description="raw delivery")] = None,
    x_amz_sns_rawdelivery: Annotated[
        str | None, Header(description="`true`: the body is the event itself")
    ] = None,
    authorization: Annotated[
        str | None, Header(description="raw delivery: `Basic` with TELNA__WEBHOOK_SECRET")
    ] = None,
) -> EventAck:
    """Telna events through AWS SNS: wrapped messages verified by their SNS signature,
    raw ones by HTTP Basic; a subscription confirmed; usage and terminations become a
    signal to the line's balance, once per MessageId. Unknown packages are ignored."""
    sns_client: SnsClient = request.app.state.sns
    try:
        body = await request.body()
        if (x_amz_sns_rawdelivery or "").lower() == "true":
            message_id = _raw_message_id(
                settings, authorization, x_amz_sns_message_type, x_amz_sns_message_id
            )
            ack = await _notification(settings, client, message_id, body)
        else:
            envelope = await _verified(settings, sns_client, body, x_amz_sns_message_type)
            ack = await _act(settings, client, sns_client, envelope)
    except ApiError as error:
        if error.status < 500:
            telemetry.webhooks.labels("rejected").inc()
        raise
    telemetry.webhooks.labels(ack.outcome).inc()
    return ack


def _raw_message_id(
    settings: Settings, authorization: str | None, kind: str | None, message_id: str | None
) -> str:
    """The MessageId of a raw delivery: a Notification with its Basic credentials right."""
    secret = settings.telna.webhook_secret.get_secret_value()
    if not telna_events.basic_password_matches(authorization, secret):
        raise ApiError(401, "unauthorized", "a raw delivery needs its Basic credentials", _BASIC)
    if kind != "Notification":
        raise ApiError(400, "invalid_event", "a raw delivery is a Notification")
    if not message_id or len(message_id) > MAX_MESSAGE_ID:
        raise ApiError(400, "invalid_event", "missing or overlong x-amz-sns-message-id header")
    return message_id


async def _verified(
    settings: Settings, sns_client: SnsClient, body: bytes, kind: str | None
) -> Envelope:
    """The envelope in ``body``, its signature verified with a certificate from an
    allowed host."""
    try:
        envelope = sns.parse(body)
    except ValueError as error:
        raise ApiError(400, "invalid_event", str(error)) from None
    if kind is not None and kind != envelope.type:
        raise ApiError(400, "invalid_event", "x-amz-sns-message-type differs from Type")
    origins = settings.telna.sns_hosts
    try:
        if envelope.signature_version not in sns.HASHES:
            raise sns.SignatureError(f"unsupported SignatureVersion {envelope.signature_version!r}")
        certificate = await sns_client.certificate(envelope.signing_cert_url, origins)
        sns.verify(envelope, certificate)
    except sns.SignatureError as error:
        raise ApiError(401, "bad_signature", str(error)) from None
    except sns.Unreachable as error:
        raise ApiError(503, "sns_unavailable", str(error)) from None
    return envelope


async def _act(
    settings: Settings, client: Client, sns_client: SnsClient, envelope: Envelope
) -> EventAck:
    """A verified envelope: a subscription confirmed, an event delivered."""
    if envelope.type == "Notification":
        return await _notification(settings, client, envelope.message_id, envelope.message.encode())
    if envelope.type == "SubscriptionConfirmation":
        assert envelope.subscribe_url is not None  # sns.parse requires it
        try:
            await sns_client.confirm(envelope.subscribe_url, settings.telna.sns_hosts)
        except sns.SignatureError as error:
            raise ApiError(401, "bad_signature", str(error)) from None
        except sns.Unreachable as error:
            raise ApiError(502, "subscribe_failed", str(error)) from None
        return EventAck(message_id=envelope.message_id, outcome="confirmed")
    return EventAck(message_id=envelope.message_id, outcome="ignored")  # unsubscribed


async def _notification(
    settings: Settings, client: Client, message_id: str, message: bytes
) -> EventAck:
    """The Telna event in a Notification, acted on once per MessageId."""
    try:
        event = telna_events.parse(message)
    except ValueError as error:
        raise ApiError(400, "invalid_event", str(error)) from None

    async def deliver() -> idempotency.Answer:
        outcome = await _signal(settings, client, event)
        return 200, EventAck(message_id=message_id, outcome=outcome).model_dump()

    request_hash = idempotency.fingerprint(message.decode(errors="replace"))
    key = idempotency.Key(EVENT_SCOPE, "", message_id)
    try:
        _, content, replayed = await idempotency.run_once(
            settings.database_url, key, request_hash, deliver
        )
    except ApiError as error:
        if error.status != 409:
            raise
        replayed = True  # the same MessageId under way or with another body: still one
    if replayed:
        return EventAck(message_id=message_id, outcome="duplicate")
    return EventAck.model_validate(content)


async def _signal(settings: Settings, client: Client, event: TelnaEvent) -> Outcome:
    """Usage of one of our lines becomes ``usage_reported``; the termination of a line
    the workflow may still hold, an ``audit`` notice that it is gone (it acts at once:
    a scheduled line is dropped, an active one rotated away from; one whose data ran out,
    ``used_up_at``, is left by usage, within the cost cap); the rest is ignored."""
    target = await run_in_threadpool(_target, settings.database_url, event.package_id)
    if target is None:
        return "ignored"
    payload: UsageReport | AuditNotice
    if event.name == telna_events.USAGE_ALERT:
        assert event.details.package.used_bytes is not None  # telna_events.parse checks
        name, payload = (
            "usage_reported",
            UsageReport(
                seq=target.seq,
                used_bytes=event.details.package.used_bytes,
                observed_at=event.observed_at,
                reference=target.reference,
            ),
        )
    elif event.terminated and target.state in HELD_STATES and target.ends_early(event.observed_at):
        used_up = event.used_up
        name, payload = (
            "audit",
            AuditNotice(
                kind="ghost_line",
                reference=target.reference,
                reason="data used up at Telna" if used_up else "terminated at Telna",
                actor="carrier",
                used_up_at=event.observed_at if used_up else None,
            ),
        )
    else:
        return "ignored"
    try:
        await client.get_workflow_handle(workflow_id(target.iccid)).signal(name, payload)
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise  # Temporal unreachable: 503, and SNS delivers it again
        return "ignored"  # the balance is closed: its lines no longer matter
    return "signalled"


def _target(url: str, package_id: str) -> Target | None:
    with session_scope(url) as session:
        line = carrier_line(session, "telna", package_id)
        if line is None:
            return None
        return Target(line.iccid, line.seq, line.reference, line.state, line.ends_at)
