"""Prometheus metrics of the worker process, in one registry served by ``worker.py``.

Every activity of the worker records here; ``worker.py`` serves the registry on
``WORKER_METRICS_PORT``. Label sets are small and fixed (carrier, operation, kind, reason,
state), never an ICCID or a balance id, so a large fleet does not grow the series.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

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
    "How long before the old line's end the next line was confirmed active, by carrier "
    "(carrier-reported times). Negative values are gaps.",
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
carrier_calls = Histogram(
    "esim_carrier_call_seconds",
    "Latency of carrier API calls, by carrier and operation.",
    ["carrier", "operation"],
    buckets=_SECONDS[:9],
    registry=REGISTRY,
)
carrier_errors = Counter(
    "esim_carrier_call_errors",
    "Failed carrier API calls, by carrier, operation and kind (rejected, unavailable, "
    "outcome_unknown).",
    ["carrier", "operation", "kind"],
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
    "two_active_lines, missing_scheduled_line, stuck_scheduled) and whether it repaired them.",
    ["kind", "repaired"],
    registry=REGISTRY,
)
usage_signals = Counter(
    "esim_usage_poll_signals",
    "Balances the usage poller signalled because their usage crossed a threshold.",
    ["carrier"],
    registry=REGISTRY,
)
notifications = Counter(
    "esim_notifications",
    "Outbound notification deliveries by outcome (delivered, retried, dropped).",
    ["outcome"],
    registry=REGISTRY,
)
