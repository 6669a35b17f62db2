"""eSIM Go's wire records read as the normalised carrier shapes (carriers.base).

Quantities in bytes, catalogue ``dataAmount`` in MB of 10^6 bytes, times RFC 3339 UTC.
Every reader raises KeyError, TypeError or ValueError on a record it cannot read.

A line is one assignment of a bundle to an eSIM. eSIM Go finds an assignment by the
eSIM, the bundle's name and the assignment's id, so a line's id names all three:
``{iccid}:{bundle name}:{assignment id}`` (:class:`LineName`). ICCIDs are digits and
assignment ids carry no ``:``; a bundle name may, so the name is everything between the
first and the last ``:``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from carriers.base import CarrierLine, CarrierProduct, LineStatus

MB = 1_000_000
DAY_SECONDS = 86_400
# processing: being applied (up to 10 minutes); queued: applied, not yet used. Depleted:
# no data left but within its duration, so the eSIM is throttled on it: active, with its
# allowance used up (as a pass run out is at the other carriers until its window ends).
STATES: dict[str, LineStatus] = {
    "processing": "scheduled",
    "queued": "scheduled",
    "active": "active",
    "depleted": "active",
    "expired": "ended",
    "revoked": "ended",
    "lapsed": "ended",
}
OPEN_STATES = frozenset(s for s, status in STATES.items() if status != "ended")
# States of an assignment that has started: proof that the eSIM has been installed.
STARTED_STATES = frozenset({"active", "depleted", "expired"})


@dataclass(frozen=True)
class LineName:
    """A line's id: the eSIM, the bundle's name and the assignment's id."""

    iccid: str
    bundle: str
    assignment_id: str

    def __str__(self) -> str:
        return f"{self.iccid}:{self.bundle}:{self.assignment_id}"

    @classmethod
    def parse(cls, line_id: str) -> LineName:
        iccid, _, rest = line_id.partition(":")
        bundle, _, assignment_id = rest.rpartition(":")
        if not (iccid.isdigit() and bundle and assignment_id and assignment_id.strip()):
            raise ValueError(f"not an eSIM Go line id (iccid:bundle:assignment): {line_id!r}")
        return cls(iccid, bundle, assignment_id)


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time with its offset (eSIM Go writes ``Z``); absent or empty: None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TypeError(f"not a time: {value!r}")
    moment = datetime.fromisoformat(value.strip())
    if moment.tzinfo is None:
        raise ValueError(f"time without an offset: {value!r}")
    return moment.astimezone(UTC)


def whole(value: Any) -> int:
    """A non-negative whole number (an integer, or a float without a fraction)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r}")
    if value < 0 or value != int(value):
        raise ValueError(f"not a whole non-negative number: {value!r}")
    return int(value)


def assignments(answer: Any) -> list[tuple[str, dict[str, Any]]]:
    """``(bundle name, assignment)`` of every assignment in a bundles answer
    (``{bundles: [{name, assignments: [...]}]}``)."""
    found = []
    for bundle in answer["bundles"]:
        name = bundle["name"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"bundle without a name: {bundle!r}")
        for a in bundle.get("assignments") or []:
            if not isinstance(a, dict):
                raise TypeError(f"assignment is no object: {a!r}")
            found.append((name, a))
    return found


def latest(answer: Any, bundle: str) -> dict[str, Any] | None:
    """The latest assignment in an answer of ``GET /esims/{iccid}/bundles/{name}``: one
    bundle with its assignments, or one assignment (see ``WIRE.latest_assignment``)."""
    if isinstance(answer, dict) and "id" in answer and "bundleState" in answer:
        return answer
    if isinstance(answer, dict) and "bundles" in answer:
        found = [a for name, a in assignments(answer) if name == bundle]
    else:
        found = list(answer["assignments"] or [])
    if not found:
        return None
    return max(found, key=assigned_at)


def assigned_at(a: dict[str, Any]) -> datetime:
    """When the assignment was made (``assignmentDateTime``): a line's ``ordered_at``."""
    moment = parse_time(a["assignmentDateTime"])
    if moment is None:
        raise ValueError("assignment without assignmentDateTime")
    return moment


def unlimited(a: dict[str, Any]) -> bool:
    return a.get("unlimited") is True


def line(iccid: str, bundle: str, a: dict[str, Any], now: datetime | None = None) -> CarrierLine:
    """One assignment as a line, read at ``now``. Its window is the carrier's own:
    ``startTime`` to ``endTime`` (trusted, never computed from the bundle's duration).
    An expired line ended at its ``endTime``; a revoked or lapsed one at its ``endTime``
    once that has passed (else when is not shown)."""
    now = now or datetime.now(UTC)
    state = str(a["bundleState"])
    allowance = whole(a["initialQuantity"])
    remaining = whole(a["remainingQuantity"])
    used = allowance if state == "depleted" else min(allowance, max(0, allowance - remaining))
    ends_at = parse_time(a.get("endTime"))
    ended = STATES[state] == "ended"
    return CarrierLine(
        line_id=str(LineName(iccid, bundle, str(a["id"]))),
        iccid=iccid,
        carrier_product_id=bundle,
        reference=None,  # an assignment has no field for ours
        status=STATES[state],
        ordered_at=assigned_at(a),
        activated_at=parse_time(a.get("startTime")),
        ends_at=ends_at,
        ended_at=ends_at if state == "expired" or (ended and ends_at and ends_at <= now) else None,
        allowance_bytes=allowance,
        used_bytes=used,
    )


def product(b: dict[str, Any], currency: str) -> CarrierProduct:
    """A catalogue bundle, its ``price`` in ``currency``. One without data (``unlimited``,
    or no ``dataAmount``) is read as 0 bytes: the catalogue sync leaves such a product
    out, and counts it."""
    name = b["name"]
    if not isinstance(name, str) or not name:
        raise ValueError(f"bundle without a name: {b!r}")
    amount = b.get("dataAmount")
    allowance = 0 if unlimited(b) or amount is None else round(_amount(amount) * MB)
    # Simulator-only fields: a compressed bundle's validity, the speed after depletion.
    seconds = b.get("durationSeconds")
    validity = whole(seconds) if seconds is not None else whole(b["duration"]) * DAY_SECONDS
    return CarrierProduct(
        carrier_product_id=name,
        name=str(b.get("description") or name),
        allowance_bytes=allowance,
        validity_seconds=validity,
        reset="rolling",
        throttle_kbps=whole(b.get("throttleKbps") or 0),
        price_cents=round(_amount(b.get("price") or 0) * 100),
        currency=currency,
        # eSIM Go starts the next queued bundle by itself when the current one ends.
        rotation="queued",
    )


def _amount(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"not a non-negative number: {value!r}")
    return float(value)
