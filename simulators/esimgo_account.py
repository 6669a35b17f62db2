"""The eSIM Go-like organisation: balance, bundle inventory, eSIMs, and the rules of
orders, applies and revokes over the carrier engine (``simulators.esimgo`` documents them).

Account state lives in ``engine.extra`` (saved with the engine's snapshot); the knobs of
:class:`AccountConfig` are the simulator's, set through ``/_sim/esimgo``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Literal

from simulators.core import CarrierEngine
from simulators.esimgo_views import CURRENCY, money, rfc3339
from simulators.records import Package

QUEUE_CAP = 30  # bundles queued on one eSIM at a time (help centre article)
REFUND_PERIOD_SECONDS = 60 * 86_400
DEFAULT_BALANCE_CENTS = 1_000_000
SMDP_ADDRESS = "rsp.esimgo-simulator.invalid"
NO_STOCK = "this simulator holds no new eSIM profiles: name the ICCIDs (added through /_sim/esims)"
NO_BUNDLES = "the user does not have any available Bundles left"
SignatureEncoding = Literal["hex", "base64"]


class EsimGoError(Exception):
    """An answer of the API: status and ``{"message"}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class AccountConfig:
    """Knobs of the simulated account (not persisted, as faults are not)."""

    refunds_enabled: bool = False
    signature_encoding: SignatureEncoding = "hex"
    rate_limit_tokens: int | None = 10


@dataclass(frozen=True)
class OrderLine:
    item: str
    quantity: int
    iccids: list[str] | None = None


class Account:
    """One organisation at the carrier, over the engine that holds its eSIMs."""

    def __init__(self, engine: CarrierEngine, config: AccountConfig | None = None) -> None:
        self.engine = engine
        self.config = config or AccountConfig()
        extra = engine.extra
        extra.setdefault("balance_cents", DEFAULT_BALANCE_CENTS)
        extra.setdefault("inventory", {})
        extra.setdefault("references", {})
        extra.setdefault("installed", [])
        extra.setdefault("removed", [])

    # -- state ----------------------------------------------------------------------

    @property
    def balance_cents(self) -> int:
        return int(self.engine.extra["balance_cents"])

    def set_balance(self, cents: int) -> None:
        self.engine.extra["balance_cents"] = cents
        self.engine.revision += 1

    @property
    def inventory(self) -> dict[str, int]:
        counts: dict[str, int] = self.engine.extra["inventory"]
        return counts

    @property
    def references(self) -> dict[str, str]:
        refs: dict[str, str] = self.engine.extra["references"]
        return refs

    @property
    def removed(self) -> list[str]:
        gone: list[str] = self.engine.extra["removed"]
        return gone

    def set_installed(self, iccids: list[str], installed: bool) -> None:
        """Marks eSIMs installed on a device, or on none: an eSIM on no device never
        attaches, so its queued bundles do not start until it is installed."""
        marked: list[str] = self.engine.extra["installed"]
        for iccid in iccids:
            if installed and iccid not in marked:
                marked.append(iccid)
            elif not installed and iccid in marked:
                marked.remove(iccid)
            if self.engine.has_esim(iccid):
                self.engine.set_detached(iccid, not installed)
        self.engine.revision += 1

    def installed(self, iccid: str) -> bool:
        """Marked installed, or a bundle of it has started or carried data: it attached to
        a network, so a device holds it."""
        if iccid in self.engine.extra["installed"]:
            return True
        return any(
            p.used_bytes > 0 or p.activated_at is not None for p in self.engine.packages(iccid)
        )

    def accessible(self, iccid: str) -> None:
        """Raises 403 unless the ICCID is the organisation's."""
        if not self.engine.has_esim(iccid) or iccid in self.removed:
            raise EsimGoError(403, f"ICCID {iccid} not accessible")

    def product_price(self, name: str) -> int:
        product = self.engine.products.get(name)
        if product is None:
            raise EsimGoError(400, f"Bundle {name!r} not found")
        return product.price_cents

    # -- orders and applies ---------------------------------------------------------

    def order(self, kind: str, assign: bool, lines: list[OrderLine]) -> dict[str, Any]:
        """``POST /orders``: every check first; ``validate`` charges and changes nothing."""
        if not lines:
            raise EsimGoError(400, "order must hold at least one item")
        plan: Counter[str] = Counter()
        for line in lines:
            self.product_price(line.item)
            if line.iccids is not None and not assign:
                raise EsimGoError(400, "iccids may only be given with assign: true")
            if assign:
                if not line.iccids:
                    raise EsimGoError(400, NO_STOCK)
                if line.quantity != len(line.iccids):
                    raise EsimGoError(400, "quantity must equal the number of iccids")
                for iccid in line.iccids:
                    self.accessible(iccid)
                plan.update(line.iccids)
        self._check_queue(plan)
        total = sum(self.product_price(line.item) * line.quantity for line in lines)
        if total > self.balance_cents:
            raise EsimGoError(400, "Insufficient balance for this order")
        now = self.engine.advance()
        transaction = kind == "transaction"
        reference = str(uuid.uuid4()) if transaction else None
        if transaction:
            self.set_balance(self.balance_cents - total)
            n = 0
            for line in lines:
                if assign:
                    for iccid in line.iccids or []:
                        self._assign(iccid, line.item, f"{reference}-{n}")
                        n += 1
                else:
                    self.inventory[line.item] = self.inventory.get(line.item, 0) + line.quantity
        verb = "assigned" if assign else "added to inventory"
        return {
            "order": [self._line_json(line) for line in lines],
            "total": money(total),
            "currency": CURRENCY,
            "valid": True,
            "createdDate": rfc3339(now),
            "assigned": assign,
            "status": "Completed" if transaction else "Validated",
            "statusMessage": f"Order {'completed' if transaction else 'valid'}: "
            f"{sum(line.quantity for line in lines)} bundles {verb}",
            "orderReference": reference,
            "runningBalance": money(self.balance_cents),
        }

    def apply(self, iccid: str | None, names: list[str], repeat: int | None) -> dict[str, Any]:
        """``POST /esims/apply``: bundles from the inventory onto one eSIM."""
        if iccid is None:
            raise EsimGoError(400, NO_STOCK)
        if repeat is not None:
            raise EsimGoError(400, "repeat asks for new eSIMs and cannot be given with iccid")
        for name in names:
            self.product_price(name)
        self.accessible(iccid)
        for name, wanted in Counter(names).items():
            if self.inventory.get(name, 0) < wanted:
                raise EsimGoError(403, NO_BUNDLES)
        self._check_queue(Counter({iccid: len(names)}))
        reference = str(uuid.uuid4())
        esims = []
        for n, name in enumerate(names):
            self.inventory[name] -= 1
            self._assign(iccid, name, f"{reference}-{n}")
            esims.append(
                {
                    "iccid": iccid,
                    "status": "Successfully Applied",
                    "bundle": name,
                    "applyReference": reference,
                }
            )
        return {"esims": esims}

    def refund_inventory(self, name: str, quantity: int) -> dict[str, Any]:
        """``POST /inventory/refund``: unused inventory back to the balance."""
        price = self.product_price(name)
        if self.inventory.get(name, 0) < quantity:
            raise EsimGoError(403, NO_BUNDLES)
        self.inventory[name] -= quantity
        self.set_balance(self.balance_cents + price * quantity)
        return {"status": "Refunded", "runningBalance": money(self.balance_cents)}

    # -- revokes --------------------------------------------------------------------

    def oldest_unused(self, iccid: str, name: str) -> Package:
        for p in self.engine.packages(iccid):
            if p.product_id == name and p.status == "NOT_ACTIVE":
                return p
        raise EsimGoError(400, f"no unused assignment of bundle {name!r} on this eSIM")

    def assignment(self, iccid: str, name: str, assignment_id: str) -> Package:
        for p in self.engine.packages(iccid):
            if p.id == assignment_id and p.product_id == name:
                return p
        raise EsimGoError(400, f"no assignment {assignment_id} of bundle {name!r} on this eSIM")

    def revoke(self, package: Package, kind: str, refund_to_balance: bool) -> dict[str, str]:
        """Ends an assignment at once; an unused one is refunded only with refunds enabled
        and within the refund period. Then the returns process: an eSIM left with no bundle
        that was never installed leaves the organisation."""
        if package.status == "TERMINATED":
            raise EsimGoError(400, "this assignment has already ended")
        now = self.engine.advance()
        refundable = (
            self.config.refunds_enabled
            and package.status == "NOT_ACTIVE"
            and now - package.ordered_at <= REFUND_PERIOD_SECONDS
        )
        if kind == "validate":
            return {"status": "Validated"}
        self.engine.terminate(package.id)
        status = "Revoked"
        if refundable and refund_to_balance:
            self.set_balance(self.balance_cents + self.product_price(package.product_id))
            status = "Revoked and refunded to balance"
        elif refundable:
            name = package.product_id
            self.inventory[name] = self.inventory.get(name, 0) + 1
            status = "Revoked and returned to inventory"
        iccid = package.iccid
        left = [p for p in self.engine.packages(iccid) if p.status != "TERMINATED"]
        if not left and not self.installed(iccid):
            self.removed.append(iccid)
        self.engine.revision += 1
        return {"status": status}

    # -- helpers --------------------------------------------------------------------

    def _assign(self, iccid: str, name: str, reference: str) -> Package:
        package = self.engine.order(iccid, name, None, queued=True)
        self.references[package.id] = reference
        self.engine.revision += 1
        return package

    def _check_queue(self, plan: Counter[str]) -> None:
        for iccid, adding in plan.items():
            waiting = sum(p.status == "NOT_ACTIVE" for p in self.engine.packages(iccid))
            if waiting + adding > QUEUE_CAP:
                raise EsimGoError(400, f"Up to {QUEUE_CAP} bundles can be queued on an eSIM")

    def _line_json(self, line: OrderLine) -> dict[str, Any]:
        price = self.product_price(line.item)
        iccids = list(line.iccids or [])
        esims = [{"iccid": i, "matchingId": i[-10:], "smdpAddress": SMDP_ADDRESS} for i in iccids]
        return {
            "type": "bundle",
            "item": line.item,
            "quantity": line.quantity,
            "subTotal": money(price * line.quantity),
            "pricePerUnit": money(price),
            "esims": esims if len(esims) <= 5 else [],
            "iccids": iccids,
        }
