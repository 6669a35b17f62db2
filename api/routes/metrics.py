"""Prometheus metrics: the API's own, and gauges read from the database at scrape time.

A scrape costs the same whatever the size of the ledger and of the balances' history:
each gauge is one read bounded by an index, never an aggregate over history. Balances by
state counts the open ones only (on the state index: Cancelled and Completed are
history); audit findings counts the audit's kinds (on the index of the audit's own events:
findings are rare, and their number, not the ledger's, is the cost); pending notifications looks
at no more than ``PENDING_SCAN`` events after the dispatcher's cursor. Values are read
on every scrape, not cached, as Prometheus expects of an exporter.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlmodel import col, func, select

from api.deps import SessionDep, TelemetryDep
from api.telemetry import OPEN_STATES, PENDING_SCAN
from models import outbox
from models.tables import Balance, LineEvent
from services.audit_rules import Kind

router = APIRouter(tags=["operations"])

AUDIT_KINDS = sorted(f"audit_{kind.value}" for kind in Kind)


@router.get("/metrics", response_class=PlainTextResponse)
def metrics(session: SessionDep, telemetry: TelemetryDep) -> PlainTextResponse:
    """Prometheus metrics: requests by route and status, open balances by state, webhooks,
    audit findings, notifications pending."""
    state = col(Balance.state)
    balances = select(state, func.count()).where(state.in_(OPEN_STATES)).group_by(state)
    telemetry.set_balances(dict(session.exec(balances).all()))
    kind = col(LineEvent.kind)
    found = (
        select(kind, func.count())
        .where(col(LineEvent.actor) == "audit")  # on the audit's own index
        .where(kind.in_(AUDIT_KINDS))
        .group_by(kind)
    )
    telemetry.set_audit_findings(dict(session.exec(found).all()))
    telemetry.notifications_pending.set(outbox.pending(session, scan=PENDING_SCAN))
    return PlainTextResponse(generate_latest(telemetry.registry), media_type=CONTENT_TYPE_LATEST)
