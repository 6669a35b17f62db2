"""The records a simulated carrier keeps: products, packages, ledger, timeline, alerts.

Times are epoch seconds (UTC floats); each protocol front end formats them its own way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal

from simulators.windows import check_reset

PackageStatus = Literal["NOT_ACTIVE", "ACTIVE", "TERMINATED"]
LedgerAction = Literal["order", "activate", "deactivate", "expire", "exhaust", "cancel"]
LineState = Literal["high_speed", "throttled", "none"]
AlertKind = Literal["usage_threshold", "status"]

USAGE_THRESHOLDS = (50, 80, 100)
# An alert's ``threshold_percent`` 0 is a package's first use: its first ``first_use_bytes``.
FIRST_USE = 0
# Products shorter than this are compressed-time ones (demos, tests, the herd benchmark's
# days of up to an hour): activation latency and usage lag scale with them.
COMPRESSED_BELOW_SECONDS = 7200


@dataclass(frozen=True)
class Product:
    """One pass in the catalogue, in the carrier's own id; ``reset`` as in simulators.windows."""

    id: str
    name: str
    allowance_bytes: int
    validity_seconds: int
    throttle_kbps: int
    price_cents: int
    reset: str = "rolling"
    reset_utc_offset_minutes: int = 0

    def __post_init__(self) -> None:
        check_reset(self.reset, self.reset_utc_offset_minutes, self.validity_seconds)

    @property
    def compressed(self) -> bool:
        """A demo/test product whose day lasts seconds to minutes."""
        return self.validity_seconds < COMPRESSED_BELOW_SECONDS


@dataclass
class Package:
    """One carrier-side pass instance on an ICCID.

    ``used_bytes`` is a float internally (usage accrues piecewise from a rate) and stops
    at the allowance: throttled traffic is not counted. ``start_at`` is set when the order
    asked for activation at a given time rather than after the carrier's latency.
    """

    id: str
    iccid: str
    product_id: str
    reference: str | None
    allowance_bytes: int
    validity_seconds: int
    ordered_at: float
    status: PackageStatus = "NOT_ACTIVE"
    activation_requested_at: float | None = None
    activation_due_at: float | None = None
    activated_at: float | None = None
    expires_at: float | None = None
    terminated_at: float | None = None
    used_bytes: float = 0.0
    alerted: list[int] = field(default_factory=list)
    reset: str = "rolling"
    reset_utc_offset_minutes: int = 0
    start_at: float | None = None
    # Activates on attach: the moment the ICCID has no ACTIVE package, without latency
    # (the device's data session is already up).
    auto: bool = False
    # A change of the ICCID's one product, replaced in place: bought when it takes effect
    # (its ``order`` is recorded then, beside its ``activate``), ending the package that
    # served until that moment; withdrawn before then, it leaves no trace in the ledger.
    in_place: bool = False
    # An in-place pass whose window has run: its product stays on the device, throttled,
    # until a change replaces it (one product per device; it does not end by itself).
    spent: bool = False
    # Queued on the ICCID (eSIM Go): starts by itself, without latency, the moment the ICCID
    # has no ACTIVE package with allowance left, but not before ``available_at`` (the
    # carrier's processing); among several ready, the shortest validity first (the one that
    # would end soonest), then the oldest order.
    queued: bool = False
    available_at: float | None = None
    # With a value, a FIRST_USE alert goes out when this much of the allowance is used.
    first_use_bytes: int | None = None
    # What the carrier bills for it (its product's price when ordered), in minor units of
    # ``currency``: the ledger's ``order`` entry says so.
    price_cents: int = 0
    currency: str = "USD"

    @property
    def remaining_bytes(self) -> int:
        return max(0, self.allowance_bytes - int(self.used_bytes))

    @property
    def exhausted(self) -> bool:
        return self.spent or self.used_bytes >= self.allowance_bytes

    def to_dict(self) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in _PACKAGE_FIELDS}
        data["alerted"] = list(self.alerted)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Package:
        return cls(**data)


_PACKAGE_FIELDS = tuple(f.name for f in fields(Package))


@dataclass(frozen=True)
class LedgerEntry:
    """One business event at the carrier; ``product_id`` is the carrier's template id."""

    at: float
    action: LedgerAction
    iccid: str
    package_id: str
    reference: str | None
    product_id: str
    # An ``order``'s price, what the carrier bills (minor units); None on other actions.
    price_cents: int | None = None
    currency: str | None = None


@dataclass
class Interval:
    """A stretch of one ICCID's service state; ``end`` is None while it lasts."""

    state: LineState
    start: float
    end: float | None = None


@dataclass(frozen=True)
class Alert:
    """What the engine tells the front end to push (usage thresholds, terminations)."""

    kind: AlertKind
    at: float
    iccid: str
    package_id: str
    reference: str | None
    product_id: str
    status: PackageStatus
    used_bytes: int
    allowance_bytes: int
    threshold_percent: int | None = None
    reason: LedgerAction | None = None
    activated_at: float | None = None
    expires_at: float | None = None


@dataclass
class Journal:
    """Where business events go: the ledger, and alerts waiting to be handed to the sink."""

    ledger: list[LedgerEntry] = field(default_factory=list)
    outbox: list[Alert] = field(default_factory=list)

    def record(self, at: float, action: LedgerAction, p: Package) -> None:
        price, currency = (p.price_cents, p.currency) if action == "order" else (None, None)
        self.ledger.append(
            LedgerEntry(at, action, p.iccid, p.id, p.reference, p.product_id, price, currency)
        )

    def alert(
        self,
        kind: AlertKind,
        at: float,
        p: Package,
        *,
        threshold_percent: int | None = None,
        reason: LedgerAction | None = None,
    ) -> None:
        self.outbox.append(
            Alert(
                kind=kind,
                at=at,
                iccid=p.iccid,
                package_id=p.id,
                reference=p.reference,
                product_id=p.product_id,
                status=p.status,
                used_bytes=int(p.used_bytes),
                allowance_bytes=p.allowance_bytes,
                threshold_percent=threshold_percent,
                reason=reason,
                activated_at=p.activated_at,
                expires_at=p.expires_at,
            )
        )
