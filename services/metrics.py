"""Prometheus metrics of the worker process, in one registry served by ``worker.py``.

Every activity of the worker records here; ``worker.py`` serves the registry on
``WORKER_METRICS_PORT``. Label sets are small and fixed (carrier, operation, kind, reason,
state), never an ICCID or a balance id, so a large fleet does not grow the series.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from sqlmodel import col

from carriers import metered
from models.db import session_scope
from models.payloads import BalanceStatus, EventRecord, Line, LineState
from models.tables import Balance

log = logging.getLogger("worker.metrics")

REGISTRY = CollectorRegistry()
# The carrier clients' own (``esim_carrier_call_*``), served with the rest.
REGISTRY.register(metered.REGISTRY)
ROTATION_REASONS = frozenset({"time", "usage", "operator"})

# Seconds, from sub-second carrier calls to day-long windows.
_SECONDS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600, 86400)

rotations = Counter(
    "esim_rotations",
    "Rotations completed (the next line confirmed active, the old one ended), by reason "
    "(time, usage, operator).",
    ["carrier", "reason"],
    registry=REGISTRY,
)
rotation_lead = Histogram(
    "esim_rotation_lead_seconds",
    "Time rotations: how long before the old line's scheduled end the next line was "
    "confirmed active, by carrier (carrier-reported times). Negative values are late.",
    ["carrier"],
    buckets=(-60, -1, 0, *_SECONDS),
    registry=REGISTRY,
)
gap = Histogram(
    "esim_rotation_gap_seconds",
    "Seconds without an active line at a rotation (carrier-reported times), by carrier.",
    ["carrier"],
    buckets=(0, *_SECONDS),
    registry=REGISTRY,
)
overlap = Histogram(
    "esim_rotation_overlap_seconds",
    "Seconds both lines were active at a rotation (carrier-reported times), by carrier.",
    ["carrier"],
    buckets=(0, *_SECONDS),
    registry=REGISTRY,
)
balances = Gauge(
    "esim_worker_balances",
    "Balances in the database by state, as the worker last read them.",
    ["state"],
    registry=REGISTRY,
)
audit_findings = Counter(
    "esim_audit_findings",
    "Disagreements the audit found, by kind (missing_workflow, ghost_line, orphan_purchase, "
    "two_active_lines, missing_scheduled_line, stuck_scheduled, unpriced_purchase, "
    "price_mismatch) and whether it repaired them.",
    ["kind", "repaired"],
    registry=REGISTRY,
)
usage_signals = Counter(
    "esim_usage_poll_signals",
    "Balances the usage poller signalled because their usage crossed a threshold.",
    ["carrier"],
    registry=REGISTRY,
)
catalogue_skipped = Counter(
    "esim_catalogue_products_skipped",
    "Carrier products a catalogue sync left out (an allowance or validity of 0 or less), "
    "by carrier; each is logged with its id.",
    ["carrier"],
    registry=REGISTRY,
)
spend = Counter(
    "esim_spend",
    "What the passes bought cost, in major units of their currency (cents / 100), by "
    "carrier and currency: counted once per line, when its purchase is first recorded.",
    ["carrier", "currency"],
    registry=REGISTRY,
)
refunds = Counter(
    "esim_refunds",
    "What carriers credited back to the account for lines they ended unused, in major "
    "units of its currency, by carrier and currency: counted once per line, when its "
    "refund is first recorded. Spend net of refunds is esim_spend_total minus this.",
    ["carrier", "currency"],
    registry=REGISTRY,
)
notifications = Counter(
    "esim_notifications",
    "Outbound notification deliveries by outcome (delivered, retried, dropped).",
    ["outcome"],
    registry=REGISTRY,
)


def observe_rotations(carrier: str, events: Sequence[EventRecord], lines: Sequence[Line]) -> None:
    """Count the rotations among newly written ``events`` and observe their lead, gap and
    overlap from the carrier-reported times of the ``lines`` written with them.

    A rotation is an ``activated`` event with a rotation reason, written together with
    the line it ended. Lead is measured for time rotations only: a usage or operator
    rotation comes early on purpose, long before the old line's scheduled end.
    """
    by_seq = {line.seq: line for line in lines}
    for event in events:
        reason = event.detail.get("reason")
        if event.kind != "activated" or reason not in ROTATION_REASONS:
            continue
        rotations.labels(carrier, reason).inc()
        new = by_seq.get(event.seq) if event.seq is not None else None
        old = next((line for line in lines if line.seq != event.seq and _ended(line)), None)
        ends = [t for t in (old.ended_at, old.ends_at) if t is not None] if old else []
        if new is None or old is None or new.activated_at is None or not ends:
            continue
        old_end = min(ends)  # it ended when we ended it, or by time if that came first
        switch = (old_end - new.activated_at).total_seconds()
        gap.labels(carrier).observe(max(0.0, -switch))
        overlap.labels(carrier).observe(max(0.0, switch))
        if reason == "time" and old.ends_at is not None:
            rotation_lead.labels(carrier).observe((old.ends_at - new.activated_at).total_seconds())


def observe_spend(carrier: str, bought: Sequence[Line]) -> None:
    """Count what the lines whose purchase was just recorded cost."""
    for line in bought:
        if line.price_cents is not None and line.currency is not None:
            spend.labels(carrier, line.currency).inc(line.price_cents / 100)


def observe_refunds(carrier: str, refunded: Sequence[tuple[int, str]]) -> None:
    """Count the refunds (cents, currency) just recorded for the first time."""
    for cents, currency in refunded:
        refunds.labels(carrier, currency).inc(cents / 100)


def _ended(line: Line) -> bool:
    return line.state in (LineState.expired, LineState.exhausted, LineState.cancelled)


def serve(port: int, host: str = "127.0.0.1") -> Callable[[], None] | None:
    """Serve ``REGISTRY`` on ``host``:``port`` in a thread; returns what stops it.

    Port 0 turns it off. A port in use is one error line and no metrics from this
    process, not a crash: rotations matter more than their metrics, and a supervisor
    restarting the worker would only meet the same port again. Several workers on one
    host need a port each.
    """
    if port == 0:
        return None
    try:
        server, thread = start_http_server(port, addr=host, registry=REGISTRY)
    except OSError as error:
        log.error(
            "worker metrics not served: %s:%d: %s (set WORKER_METRICS_PORT to a free "
            "port, or 0 to turn them off)",
            host,
            port,
            error.strerror or error,
        )
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def refresh_balances(database_url: str) -> None:
    """Set ``esim_worker_balances`` from the database (every state, zero included)."""
    with session_scope(database_url) as session:
        rows = session.execute(
            sa.select(col(Balance.state), sa.func.count()).group_by(col(Balance.state))
        ).all()
    counts = {state: int(n) for state, n in rows}
    for state in BalanceStatus:
        balances.labels(state=state.value).set(counts.get(state.value, 0))


async def watch_balances(database_url: str, stop: asyncio.Event, interval: float = 15.0) -> None:
    """Refresh the balances gauge every ``interval`` seconds until ``stop``; a failing
    read leaves the last values and is tried again."""
    while not stop.is_set():
        try:
            await asyncio.to_thread(refresh_balances, database_url)
        except Exception as error:  # noqa: BLE001  (metrics must not stop the worker)
            log.warning("balances by state not refreshed: %s", error)
        try:
            await asyncio.wait_for(stop.wait(), timeout=interval)
        except TimeoutError:
            pass
