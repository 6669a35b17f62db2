"""Prometheus metrics of one API app, in its own registry (so apps in one process do not
collide), and the middleware that counts every request by route template and status."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.payloads import CLOSED_STATUSES, BalanceStatus

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
OPEN_STATES = [state.value for state in BalanceStatus if state not in CLOSED_STATUSES]
# Ledger events after the notification cursor one scrape looks at, at most: a backlog
# that large is what to alert on, whatever lies beyond it.
PENDING_SCAN = 10_000


class Telemetry:
    """The API's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "esim_api_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "esim_api_request_duration_seconds",
            "Time to answer an HTTP request, by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.webhooks = Counter(
            "esim_api_telna_events",
            "Telna SNS messages by outcome (signalled, ignored, duplicate, confirmed, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.esimgo_events = Counter(
            "esim_api_esimgo_events",
            "eSIM Go callbacks by outcome (signalled, ignored, duplicate, notice, rejected).",
            ["outcome"],
            registry=self.registry,
        )
        self.idempotent_replays = Counter(
            "esim_api_idempotent_replays",
            "POST /v1/balances answered from an earlier request with the same key.",
            registry=self.registry,
        )
        self.balances = Gauge(
            "esim_balances",
            "Open balances in the database by state (read at scrape time; closed ones, "
            "Cancelled and Completed, are history and not counted).",
            ["state"],
            registry=self.registry,
        )

        self.audit_findings = Gauge(
            "esim_audit_findings_recorded",
            "Audit findings in the ledger (line_event kinds audit_*), by kind (read at "
            "scrape time).",
            ["kind"],
            registry=self.registry,
        )
        self.notifications_pending = Gauge(
            "esim_notifications_pending",
            "Notifiable ledger events not yet delivered nor dropped, among the next "
            f"{PENDING_SCAN:,} after the dispatcher's cursor (0 while notifications have "
            "never run; read at scrape time).",
            registry=self.registry,
        )

    def set_audit_findings(self, counts: dict[str, int]) -> None:
        """Kinds come from the ledger without their ``audit_`` prefix; a kind seen once
        keeps its series (at its new count) for as long as the app runs."""
        for kind, n in counts.items():
            self.audit_findings.labels(kind=kind.removeprefix("audit_")).set(n)

    def set_balances(self, counts: dict[str, int]) -> None:
        for state in OPEN_STATES:
            self.balances.labels(state=state).set(counts.get(state, 0))


class TelemetryMiddleware:
    """Counts and times every HTTP request; unmatched paths and odd methods share a label,
    so clients cannot grow the label sets."""

    def __init__(self, app: ASGIApp, telemetry: Telemetry) -> None:
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises
        started = time.perf_counter()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            method = scope["method"] if scope["method"] in METHODS else "OTHER"
            self.telemetry.requests.labels(method, label, str(status)).inc()
            self.telemetry.latency.labels(method, label).observe(time.perf_counter() - started)
