"""Carrier webhooks: authenticated by the carrier's signature, not by an API key."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from api import idempotency, telna_events
from api.deps import ClientDep, SettingsDep, TelemetryDep
from api.errors import ApiError, documented
from api.telna_events import TelnaEvent
from models.payloads import UsageReport
from services.enrolment import workflow_id

router = APIRouter(prefix="/v1/carriers", tags=["carrier webhooks"])

EVENT_SCOPE = "telna-event"
Outcome = Literal["signalled", "ignored", "duplicate"]


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
    """What became of a webhook delivery."""

    event_id: str
    outcome: Outcome


@router.post(
    "/telna/events",
    status_code=202,
    responses=documented(400, 401, 413, 422, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": _inline(TelnaEvent.model_json_schema())}},
        }
    },
)
async def telna_event(
    request: Request,
    settings: SettingsDep,
    client: ClientDep,
    telemetry: TelemetryDep,
    telna_signature: Annotated[
        str | None, Header(description="`t=<unix seconds>,v1=<hex HMAC-SHA256>`")
    ] = None,
) -> EventAck:
    """Telna usage/status webhook: signature checked, usage becomes a signal, once."""
    body = await request.body()
    try:
        telna_events.verify(settings.telna.webhook_secret.get_secret_value(), telna_signature, body)
    except telna_events.SignatureError as error:
        telemetry.webhooks.labels("rejected").inc()
        raise ApiError(401, "bad_signature", str(error)) from None
    try:
        event = telna_events.parse(body)
    except ValueError as error:
        telemetry.webhooks.labels("rejected").inc()
        raise ApiError(400, "invalid_event", str(error)) from None

    async def deliver() -> idempotency.Answer:
        outcome = await _signal(client, event)
        return 202, EventAck(event_id=event.event_id, outcome=outcome).model_dump()

    request_hash = idempotency.fingerprint(body.decode(errors="replace"))
    url = settings.database_url
    try:
        key = idempotency.Key(EVENT_SCOPE, "", event.event_id)
        _, content, replayed = await idempotency.run_once(url, key, request_hash, deliver)
    except ApiError as error:
        if error.status != 409:
            raise
        replayed = True  # the same event id under way or with another body: still one
    if replayed:
        content = EventAck(event_id=event.event_id, outcome="duplicate").model_dump()
    ack = EventAck.model_validate(content)
    telemetry.webhooks.labels(ack.outcome).inc()
    return ack


async def _signal(client: Client, event: TelnaEvent) -> Outcome:
    """Usage of one of our lines becomes ``usage_reported``; anything else is ignored."""
    target = telna_events.balance_line(event)
    if target is None or event.event != "usage.threshold":
        return "ignored"
    details = event.eventDetails
    report = UsageReport(
        seq=target[1],
        used_bytes=details.data_usage,
        observed_at=event.observed_at,
        reference=details.customer_ref,
    )
    try:
        await client.get_workflow_handle(workflow_id(details.iccid)).signal(
            "usage_reported", report
        )
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise  # Temporal unreachable: 503, and the carrier delivers it again
        return "ignored"  # the balance is closed: usage of its lines no longer matters
    return "signalled"
