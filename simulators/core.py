"""A protocol-independent carrier simulation engine.

It keeps what a carrier keeps (inventory, catalogue, packages, a ledger and each ICCID's
service timeline) and moves it through time with :meth:`CarrierEngine.advance`, which
replays, per ICCID and in time order, every event due: activations, expiries, and the
exact moments usage crosses 50/80/100 % of an allowance (from the ICCID's traffic rate).
Each change is stamped with the exact time it happened, not the time ``advance`` ran.
Every operation advances first. ICCIDs are replayed on their own: an operation replays
its ICCID only, ``advance`` only those with an event due (a heap of next event times).

Carrier semantics chosen here (none of them is public):
- Traffic of an ICCID is consumed by its most recently activated ACTIVE package that has
  allowance left. When every ACTIVE package is used up the ICCID is throttled; throttled
  traffic is not counted, so ``used_bytes`` never exceeds the allowance.
- A carrier whose used-up package ends (``used_up_ends``, Telna) records ``exhaust`` and
  then ``expire`` at the moment the allowance is used up, and the package is TERMINATED:
  a waiting AUTO package starts at once, else the ICCID has no service (never throttled).
- An ACTIVE package's window ends by its product's reset rule (simulators.windows): rolling
  (``validity_seconds`` from activation), or at the next UTC or local midnight.
- Activation is asynchronous; its latency is drawn from a seeded RNG.
- Alerts (usage thresholds, terminations) go to a pluggable sink, once each.
- A queued package (eSIM Go) starts when the ICCID has no ACTIVE package with allowance
  left, so a used-up pass hands over at once; see records.Package.queued.
- For a carrier with one product per device (Webbing), a package ordered ``in_place``
  replaces the one serving when it activates, and a suspended ICCID has no package open.
"""

from __future__ import annotations

import copy
import heapq
import logging
import random
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from simulators.errors import UnknownPackage, UnknownProduct, UnknownSim, WrongState
from simulators.records import (
    COMPRESSED_BELOW_SECONDS,
    Alert,
    Interval,
    Journal,
    LedgerAction,
    LedgerEntry,
    Package,
    Product,
)
from simulators.sim import SimCard

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
AlertSink = Callable[[Alert], None]

DEFAULT_ACTIVATION_LATENCY = (2.0, 90.0)
# Compressed products activate in 1-5 % of their validity: a 30 s pass takes 0.3-1.5 s.
COMPRESSED_LATENCY_FRACTION = (0.01, 0.05)
SNAPSHOT_VERSION = 1


def _new_id() -> str:
    return uuid.uuid4().hex[:16]


class CarrierEngine:
    """The simulated carrier's state and clock. Not thread-safe: use it from one loop."""

    def __init__(
        self,
        products: Iterable[Product],
        *,
        clock: Clock = time.time,
        seed: int | None = None,
        sink: AlertSink | None = None,
        activation_latency: tuple[float, float] = DEFAULT_ACTIVATION_LATENCY,
        new_id: Callable[[], str] = _new_id,
        used_up_ends: bool = False,
    ) -> None:
        self.products = {p.id: p for p in products}
        # The carrier ends a package whose data is used up, as it ends one at its window's
        # end (SimCard.run); else the package stays ACTIVE at the throttled speed.
        self.used_up_ends = used_up_ends
        self.clock = clock
        self.sink = sink
        self.new_id = new_id
        # How many of an ICCID's newest packages its list shows (None: all); see listed().
        self.list_limit: int | None = None
        # Bytes of a queued package's first use, alerted as FIRST_USE (None: no such alert).
        self.first_use_bytes: int | None = None
        # The currency of the catalogue's prices, what every order is billed in (the front
        # end's choice: none of the carriers' catalogues says one).
        self.currency = "USD"
        # A front end's own account state (JSON-ready), kept in the snapshot with the rest;
        # whoever changes it bumps ``revision``.
        self.extra: dict[str, Any] = {}
        # Grows on every change; a front end saves its snapshot when it moved.
        self.revision = 0
        self._rng = random.Random(seed)
        self._latency = (0.0, 0.0)
        self.set_activation_latency(*activation_latency)
        self._sims: dict[str, SimCard] = {}
        self._packages: dict[str, Package] = {}
        self._default_traffic = 0.0
        self._journal = Journal()
        self._heap: list[tuple[float, str]] = []
        self._due: dict[str, float] = {}
        self._advanced_to = clock()

    # -- configuration and inventory ------------------------------------------------

    @property
    def activation_latency(self) -> tuple[float, float]:
        """Latency range in seconds of real (non-compressed) products."""
        return self._latency

    def set_activation_latency(self, low: float, high: float) -> None:
        if not 0 <= low <= high:
            raise ValueError("activation latency needs 0 <= min <= max")
        self._latency = (float(low), float(high))
        self.revision += 1

    def add_esims(self, iccids: Iterable[str]) -> int:
        """Adds ICCIDs to the inventory (idempotent); returns how many were new."""
        now = self.advance()
        added = 0
        for iccid in iccids:
            if iccid not in self._sims:
                self._sims[iccid] = SimCard(iccid, advanced_to=now, added_at=now)
                added += 1
        self.revision += added
        return added

    def has_esim(self, iccid: str) -> bool:
        return iccid in self._sims

    def iccids(self) -> list[str]:
        """The inventory, in the order the ICCIDs were added."""
        return list(self._sims)

    @property
    def inventory_size(self) -> int:
        return len(self._sims)

    def set_traffic(self, bytes_per_second: float, iccid: str | None = None) -> None:
        """Sets one ICCID's device traffic, or every ICCID's (now and later) if none named."""
        if bytes_per_second < 0:
            raise ValueError("bytes_per_second must not be negative")
        now = self.advance()
        sims = [self._sim(iccid)] if iccid is not None else list(self._sims.values())
        for sim in sims:
            self._touch(sim, now)
        if iccid is None:
            self._default_traffic = float(bytes_per_second)
        for sim in sims:
            sim.traffic = None if iccid is None else float(bytes_per_second)
            self._schedule(sim)
        self.revision += 1

    def traffic(self, iccid: str) -> float:
        return self._rate(self._sim(iccid))

    # -- carrier operations ---------------------------------------------------------

    def order(
        self,
        iccid: str,
        product_id: str,
        reference: str | None,
        auto: bool = False,
        *,
        in_place: bool = False,
        queued: bool = False,
    ) -> Package:
        """Creates a NOT_ACTIVE package. Like real carriers, never refuses a repeat order
        (but a suspended ICCID takes none).

        An ``auto`` package activates on attach: as soon as the ICCID has no ACTIVE
        package (at once if it has none now), with no latency. An ``in_place`` one is a
        change of the ICCID's product: it is bought when it activates, after the changes
        asked for before it, and ends the package that served until then. A ``queued``
        one (records.Package.queued) is ready after the activation latency (the carrier's
        processing) and starts when the ICCID has no ACTIVE package with allowance left.
        """
        now = self.advance()
        sim = self._sim(iccid)
        product = self.products.get(product_id)
        if product is None:
            raise UnknownProduct(f"unknown package template {product_id!r}")
        self._touch(sim, now)
        if sim.suspended:
            raise WrongState(f"sim {iccid} is suspended")
        package = Package(
            id=self.new_id(),
            iccid=iccid,
            product_id=product.id,
            reference=reference,
            allowance_bytes=product.allowance_bytes,
            validity_seconds=product.validity_seconds,
            ordered_at=now,
            reset=product.reset,
            reset_utc_offset_minutes=product.reset_utc_offset_minutes,
            price_cents=product.price_cents,
            currency=self.currency,
            auto=auto,
            in_place=in_place,
            queued=queued,
        )
        if queued:
            package.available_at = now + self._draw_latency(product.validity_seconds)
            package.first_use_bytes = self.first_use_bytes
        self._packages[package.id] = package
        sim.packages.append(package)
        if not in_place:
            self._journal.record(now, "order", package)
        self._settle(sim, now)
        return package

    def activate(self, package_id: str, at: float | None = None) -> Package:
        """Requests activation (idempotent); ACTIVE follows after the activation latency.

        With ``at`` in the future the package is queued instead: it turns ACTIVE exactly
        then (a start booked in advance is provisioned ahead, so no latency applies). A
        request to activate now overrides a queued start that is later than its latency.
        """
        package, sim, now = self._current(package_id)
        if package.status == "TERMINATED":
            raise WrongState(f"package {package_id} is terminated")
        if package.status != "NOT_ACTIVE":
            return package
        if at is not None and at > now:
            if package.activation_due_at is None:
                package.activation_requested_at = now
                package.start_at = package.activation_due_at = at
        elif package.activation_due_at is None or package.activation_due_at == package.start_at:
            package.activation_requested_at = now
            due = now + self._draw_latency(package.validity_seconds)
            earlier = sim.in_place_due_after(package) if package.in_place else None
            if earlier is not None:
                due = max(due, earlier)
            if package.activation_due_at is None or due < package.activation_due_at:
                package.activation_due_at = due
        else:
            return package
        self._settle(sim, now)
        return package

    def terminate(self, package_id: str) -> Package:
        """Ends a package at once (idempotent): ``deactivate`` if ACTIVE, else ``cancel``."""
        package, sim, now = self._current(package_id)
        if package.status != "TERMINATED":
            action: LedgerAction = "deactivate" if package.status == "ACTIVE" else "cancel"
            sim.end(package, now, action, self._journal)
            self._settle(sim, now)
        return package

    def suspend(self, iccid: str) -> SimCard:
        """Suspends an ICCID (idempotent): its open packages end now (``deactivate`` if
        ACTIVE, else ``cancel``) and it takes no order until resumed."""
        now = self.advance()
        sim = self._sim(iccid)
        self._touch(sim, now)
        if not sim.suspended:
            for package in sim.open_packages():
                action: LedgerAction = "deactivate" if package.status == "ACTIVE" else "cancel"
                sim.end(package, now, action, self._journal)
            sim.suspended, sim.status_changed_at = True, now
            self._settle(sim, now)
        return sim

    def resume(self, iccid: str) -> SimCard:
        """Lifts a suspension (idempotent); the ICCID serves again once a package is
        ordered and activated: nothing that ended comes back."""
        now = self.advance()
        sim = self._sim(iccid)
        self._touch(sim, now)
        if sim.suspended:
            sim.suspended, sim.status_changed_at = False, now
            self.revision += 1
        return sim

    def set_detached(self, iccid: str, detached: bool) -> SimCard:
        """Puts an ICCID on no device (``detached``: it never attaches, so no queued package
        starts) or back on one (what is queued may start at once)."""
        now = self.advance()
        sim = self._sim(iccid)
        self._touch(sim, now)
        if sim.detached != detached:
            sim.detached = detached
            self._settle(sim, now)
        return sim

    # -- reads ----------------------------------------------------------------------

    def sim(self, iccid: str) -> SimCard:
        """One ICCID brought up to now: its packages, suspension and times. Read only."""
        now = self.advance()
        sim = self._sim(iccid)
        self._touch(sim, now)
        return sim

    def package(self, package_id: str) -> Package:
        return self._current(package_id)[0]

    def packages(self, iccid: str | None = None) -> list[Package]:
        """Packages in the order they were ordered, optionally of one ICCID."""
        now = self.advance()
        sims = [self._sim(iccid)] if iccid is not None else list(self._sims.values())
        for sim in sims:
            self._touch(sim, now)
        return [p for sim in sims for p in sim.packages]

    def listed(self, iccid: str) -> list[Package]:
        """One ICCID's packages as its list answers them, oldest first: with
        ``list_limit``, only the newest that many (a carrier that lists recent packages
        only, as eSIM Go lists 15 unless asked for more)."""
        packages = self.packages(iccid)
        return packages[-self.list_limit :] if self.list_limit else packages

    def ledger(self, iccid: str | None = None) -> list[LedgerEntry]:
        """Business events in time order (ICCIDs are replayed separately, so sort here)."""
        self.advance()
        entries = [e for e in self._journal.ledger if iccid is None or e.iccid == iccid]
        return sorted(entries, key=lambda e: e.at)

    def timeline(self, iccid: str) -> list[Interval]:
        now = self.advance()
        sim = self._sim(iccid)
        self._touch(sim, now)
        return list(sim.timeline)

    # -- time -----------------------------------------------------------------------

    def advance(self, now: float | None = None) -> float:
        """Applies every event due by ``now`` (default: the clock); returns the time reached.

        Only ICCIDs with an event due are replayed; usage of the others accrues when read.
        """
        now = max(self.clock() if now is None else now, self._advanced_to)
        while self._heap and self._heap[0][0] <= now:
            at, iccid = heapq.heappop(self._heap)
            if self._due.get(iccid) == at:
                del self._due[iccid]
                self._touch(self._sims[iccid], now)
        self._advanced_to = now
        self._flush()
        return now

    def _current(self, package_id: str) -> tuple[Package, SimCard, float]:
        now = self.advance()
        package = self._packages.get(package_id)
        if package is None:
            raise UnknownPackage(f"unknown package {package_id!r}")
        sim = self._sims[package.iccid]
        self._touch(sim, now)
        return package, sim, now

    def _touch(self, sim: SimCard, now: float) -> None:
        """Brings one ICCID up to ``now``."""
        if sim.run(now, self._rate(sim), self._journal, used_up_ends=self.used_up_ends):
            self.revision += 1
        self._schedule(sim)
        self._flush()

    def _settle(self, sim: SimCard, now: float) -> None:
        """After an operation: apply what fell due this instant, update timeline and sink."""
        self._touch(sim, now)
        sim.update_timeline(now)
        self.revision += 1

    def _schedule(self, sim: SimCard) -> None:
        at = sim.next_event_at(self._rate(sim))
        if at is None:
            self._due.pop(sim.iccid, None)
        elif self._due.get(sim.iccid) != at:
            self._due[sim.iccid] = at
            heapq.heappush(self._heap, (at, sim.iccid))

    def _rate(self, sim: SimCard) -> float:
        return self._default_traffic if sim.traffic is None else sim.traffic

    def _flush(self) -> None:
        outbox = sorted(self._journal.outbox, key=lambda a: a.at)
        self._journal.outbox.clear()
        if self.sink is None:
            return
        for alert in outbox:
            try:
                self.sink(alert)
            except Exception:
                logger.exception("alert sink failed for %s", alert)

    def _draw_latency(self, validity_seconds: int) -> float:
        if validity_seconds < COMPRESSED_BELOW_SECONDS:
            low, high = COMPRESSED_LATENCY_FRACTION
            return self._rng.uniform(low, high) * validity_seconds
        return self._rng.uniform(*self._latency)

    def _sim(self, iccid: str) -> SimCard:
        sim = self._sims.get(iccid)
        if sim is None:
            raise UnknownSim(f"unknown sim {iccid!r}")
        return sim

    # -- persistence ----------------------------------------------------------------

    def to_snapshot(self) -> dict[str, Any]:
        """The whole state as fresh JSON-ready data (the catalogue stays with the front end).

        Each ICCID keeps the time it was brought up to, so nothing needs replaying first.
        """
        version, internal, gauss = self._rng.getstate()
        return {
            "version": SNAPSHOT_VERSION,
            "advanced_to": self._advanced_to,
            "activation_latency": list(self._latency),
            "rng": [version, list(internal), gauss],
            "default_traffic": self._default_traffic,
            "sims": [sim.to_dict() for sim in self._sims.values()],
            "ledger": [
                [
                    e.at,
                    e.action,
                    e.iccid,
                    e.package_id,
                    e.reference,
                    e.product_id,
                    e.price_cents,
                    e.currency,
                ]
                for e in self._journal.ledger
            ],
            "extra": copy.deepcopy(self.extra),
        }

    @classmethod
    def from_snapshot(
        cls,
        data: dict[str, Any],
        products: Iterable[Product],
        *,
        clock: Clock = time.time,
        sink: AlertSink | None = None,
        new_id: Callable[[], str] = _new_id,
        used_up_ends: bool = False,
    ) -> CarrierEngine:
        """Restores an engine; its next ``advance`` applies the time that passed since."""
        if data.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported snapshot version {data.get('version')!r}")
        engine = cls(products, clock=clock, sink=sink, new_id=new_id, used_up_ends=used_up_ends)
        try:
            engine.set_activation_latency(*data["activation_latency"])
            version, internal, gauss = data["rng"]
            engine._rng.setstate((version, tuple(internal), gauss))
            engine._default_traffic = float(data["default_traffic"])
            for raw in data["sims"]:
                sim = SimCard.from_dict(raw)
                engine._sims[sim.iccid] = sim
                engine._packages.update((p.id, p) for p in sim.packages)
                engine._schedule(sim)
            engine._journal.ledger = [LedgerEntry(*e) for e in data["ledger"]]
            engine._advanced_to = float(data["advanced_to"])
            engine.extra = dict(data.get("extra", {}))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed snapshot: {exc!r}") from exc
        engine.revision = 0
        return engine
