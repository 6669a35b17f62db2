"""The eSIM Go-like carrier's wire formats: bundles, assignments, states, times, money.

Each mapping is written once here; ``simulators.esimgo`` documents the choices.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any, Literal

from simulators.records import Package, Product

BundleState = Literal["processing", "queued", "active", "depleted", "expired", "revoked"]
# Listed without includeUsed: what is still to come or serving.
CURRENT_STATES: frozenset[BundleState] = frozenset({"processing", "queued", "active"})
MB = 1_000_000
DAY = 86_400
CURRENCY = "USD"
COUNTRIES = {
    "GB": {"name": "United Kingdom", "region": "Europe", "iso": "GB"},
    "IM": {"name": "Isle of Man", "region": "Europe", "iso": "IM"},
    "NL": {"name": "Netherlands", "region": "Europe", "iso": "NL"},
}


def rfc3339(t: float | None) -> str | None:
    """Epoch seconds as RFC 3339 UTC in whole seconds (truncated), as the record's examples."""
    if t is None:
        return None
    return datetime.fromtimestamp(math.floor(t), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(cents: int) -> float:
    return round(cents / 100, 2)


def country_of(product: Product) -> str:
    """The ISO code a bundle's name carries (``esim_1GB_1D_GB_V2``); GB for the compressed."""
    for part in product.id.split("_"):
        if part in COUNTRIES:
            return part
    return "GB"


def bundle_json(product: Product) -> dict[str, Any]:
    """A catalogue bundle; ``durationSeconds`` and ``throttleKbps`` are the simulator's own."""
    iso = country_of(product)
    return {
        "name": product.id,
        "description": product.name,
        "groups": ["Standard Fixed"],
        "countries": [COUNTRIES[iso]],
        "dataAmount": product.allowance_bytes // MB,
        "duration": max(1, math.ceil(product.validity_seconds / DAY)),
        "speed": ["4G", "5G"],
        "autostart": True,
        "unlimited": False,
        "roamingEnabled": [],
        "price": money(product.price_cents),
        "billingType": "FixedCost",
        "durationSeconds": product.validity_seconds,
        "throttleKbps": product.throttle_kbps,
    }


def bundle_state(p: Package, now: float) -> BundleState:
    if p.status == "NOT_ACTIVE":
        return "processing" if (p.available_at or 0.0) > now else "queued"
    if p.status == "ACTIVE":
        return "depleted" if p.exhausted else "active"
    if p.activated_at is not None and p.expires_at is not None:
        if p.terminated_at is not None and p.terminated_at >= p.expires_at:
            return "expired"
    return "revoked"


def assignment_json(p: Package, reference: str, now: float) -> dict[str, Any]:
    """One assignment of a bundle to an eSIM; quantities in bytes; startTime/endTime only
    once it started (endTime: its window's end, or the moment it was revoked)."""
    state = bundle_state(p, now)
    view: dict[str, Any] = {
        "id": p.id,
        "assignmentReference": reference,
        "callTypeGroup": "data",
        "initialQuantity": p.allowance_bytes,
        "remainingQuantity": p.remaining_bytes,
        "assignmentDateTime": rfc3339(p.ordered_at),
        "bundleState": state,
        "unlimited": False,
    }
    if p.activated_at is not None:
        view["startTime"] = rfc3339(p.activated_at)
        end = p.terminated_at if state == "revoked" else p.expires_at
        view["endTime"] = rfc3339(end)
    return view


def grouped(
    packages: list[Package], products: dict[str, Product], references: dict[str, str], now: float
) -> list[dict[str, Any]]:
    """Assignments under their bundle, in the order given, a bundle where it first appears."""
    bundles: dict[str, dict[str, Any]] = {}
    for p in packages:
        product = products.get(p.product_id)
        bundle = bundles.setdefault(
            p.product_id,
            {
                "name": p.product_id,
                "description": product.name if product else p.product_id,
                "assignments": [],
            },
        )
        bundle["assignments"].append(assignment_json(p, references.get(p.id, ""), now))
    return list(bundles.values())
