"""Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlmodel import col, func, select

from activities import outbox
from api.deps import SessionDep, TelemetryDep
from models.tables import Balance, LineEvent

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(session: SessionDep, telemetry: TelemetryDep) -> PlainTextResponse:
    """Prometheus metrics: requests by route and status, balances by state, webhooks,
    audit findings, notifications pending."""
    rows = session.exec(select(Balance.state, func.count()).group_by(Balance.state)).all()
    telemetry.set_balances(dict(rows))
    audit = col(LineEvent.kind).startswith("audit_")
    found = session.exec(select(LineEvent.kind, func.count()).where(audit).group_by(LineEvent.kind))
    telemetry.set_audit_findings(dict(found.all()))
    telemetry.notifications_pending.set(outbox.pending(session))
    return PlainTextResponse(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
