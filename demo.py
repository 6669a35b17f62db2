"""The demo fleet ``make run`` seeds, and the progress line it prints while it runs.

Seeding goes through the product's own front door, as a customer's systems would: the
simulators' ``/_sim`` control API puts the eSIMs into each carrier's inventory and sets
their device traffic, then the HTTP API (operator key) registers each eSIM and starts its
balance. Every step is idempotent (fixed ICCIDs; ``POST /v1/esims`` and ``POST
/v1/balances`` answer 200 for what exists), so the next ``make run`` on the same data
directory reuses the fleet instead of growing it.

Progress comes from the API only (``GET /v1/balances``, and ``GET /v1/continuity`` where
the API serves it), never from simulator internals: it shows what an operator would see.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from models.identifiers import make_iccid

FLEET_SIZE = 24
# ICCID bodies 8944 0000 0000 9901 nn: fixed, so a second run finds the same eSIMs. (The
# two-carrier fleet before eSIM Go had 9900 nn: a data directory of then keeps it.)
ICCID_PREFIX = "8944000000009901"
# Each carrier's compressed pass of ``{seconds}`` (30 or 60), by catalogue id; eSIM Go's
# bundles carry 100 kB a second of validity in their name (``esim_3MB_30S_SIM``).
CARRIER_PRODUCTS = {
    "telna": "telna-compressed-{seconds}s",
    "webbing": "webbing-90{seconds}",
    "esimgo": "esimgo-esim_{megabytes}MB_{seconds}S_SIM",
}
CARRIERS = tuple(CARRIER_PRODUCTS)
# The operator's customers the fleet is sold to (``customer_ref``), so spend is reported
# per customer too (`GET /v1/spend?group_by=customer`): each has eSIMs at every carrier.
CUSTOMERS = ("acme-logistics", "globex-fleet", "initech-iot")
HEAVY_SHARE = 2.5  # a heavy user's traffic, in allowances per validity: runs out at 40 %
LIGHT_SHARE = 0.5  # everybody else: half the allowance by the line's end
PRINT_EVERY = 10.0  # seconds between progress lines while things change
# Balances started this far apart end their lines apart too, instead of the whole fleet
# switching in the same few seconds (a herd a small machine handles only just).
SPACING = 1.0


class DemoError(RuntimeError):
    """Seeding cannot go on now (an API or simulator refused); the message says why."""


@dataclass(frozen=True)
class DemoEsim:
    """One eSIM of the demo fleet: its carrier, product and device traffic."""

    iccid: str
    carrier: str
    product_id: str
    heavy: bool  # uses its allowance up early, so its balance rotates by usage
    customer: str  # the operator's customer it is sold to (``customer_ref``)


def demo_fleet(size: int = FLEET_SIZE) -> list[DemoEsim]:
    """The fleet: the three carriers alternating (Telna, Webbing, eSIM Go), two of each
    carrier's eight eSIMs on 60 s passes (the rest 30 s), and a few heavy users, whose
    balances rotate early by usage: every sixth eSIM, all on Telna, whose usage webhooks
    move the switch early at once, and one eSIM Go eSIM in twelve, whose carrier starts
    the next queued bundle itself the moment the pass is used up (the product confirms).
    None is on Webbing, polling-only: a heavy user's switch waits there for the usage
    poller (every 5 s under `make run`), seconds a demo should not show as normal.
    Each run of three (one per carrier) is sold to the next of :data:`CUSTOMERS`."""
    fleet = []
    for n in range(size):
        carrier = CARRIERS[n % len(CARRIERS)]
        seconds = 60 if (n // len(CARRIERS)) % 3 == 2 else 30
        product = CARRIER_PRODUCTS[carrier].format(seconds=seconds, megabytes=seconds // 10)
        iccid = make_iccid(f"{ICCID_PREFIX}{n:02d}")
        heavy = n % 6 == 0 or n % 12 == 5
        customer = CUSTOMERS[(n // len(CARRIERS)) % len(CUSTOMERS)]
        fleet.append(DemoEsim(iccid, carrier, product, heavy=heavy, customer=customer))
    return fleet


def operator_key(api_keys: str) -> str | None:
    """The first ``operator`` key of an ``API_KEYS`` value (``role:key,...``)."""
    for entry in api_keys.split(","):
        role, _, key = entry.strip().partition(":")
        if role == "operator" and key:
            return key
    return None


@dataclass(frozen=True)
class Seeded:
    """What seeding did: balances started now, and those found already open."""

    new: int
    reused: int


def _checked(response: httpx.Response, *ok: int) -> dict[str, Any]:
    """The JSON body of an answer with one of the ``ok`` statuses; else a DemoError."""
    if response.status_code not in ok:
        raise DemoError(
            f"{response.request.method} {response.request.url.path} answered "
            f"{response.status_code}: {response.text[:200]}"
        )
    body: dict[str, Any] = response.json()
    return body


def seed(
    api: httpx.Client,
    sims: dict[str, httpx.Client],
    fleet: list[DemoEsim],
    pause: Callable[[float], bool] = lambda seconds: False,
    started: set[str] | None = None,
) -> Seeded:
    """Put the fleet into the carriers' inventories with traffic, then enrol it via the API.

    ``api`` carries the operator key; ``sims`` maps each carrier to its simulator. A
    balance an operator changed to another product (409 ``balance_open``) counts as
    reused: the demo leaves operators' changes alone. After each balance started,
    ``pause(SPACING)`` is called; should it answer True, seeding stops there.

    ``started`` holds the ICCIDs whose enrolment was sent by an earlier attempt of the
    same seeding: one found open then was started by us (its answer was lost), not reused.
    """
    started = set() if started is None else started
    products = {p["id"]: p for p in _checked(api.get("/v1/products"), 200)["data"]}
    if missing := sorted({e.product_id for e in fleet} - products.keys()):
        raise DemoError(f"products {', '.join(missing)} are not in the catalogue (yet)")
    for carrier, sim in sims.items():
        iccids = [e.iccid for e in fleet if e.carrier == carrier]
        _checked(sim.post("/_sim/esims", json={"iccids": iccids}), 200)
    new = reused = 0
    for esim in fleet:
        product = products[esim.product_id]
        share = HEAVY_SHARE if esim.heavy else LIGHT_SHARE
        rate = share * product["allowance_bytes"] / product["validity_seconds"]
        traffic = {"iccid": esim.iccid, "bytes_per_second": rate}
        _checked(sims[esim.carrier].post("/_sim/traffic", json=traffic), 200)
        # An eSIM of an earlier run without a customer gets it; its open balance keeps
        # none, and the next one takes the eSIM's.
        body = {"iccid": esim.iccid, "carrier": esim.carrier, "customer_ref": esim.customer}
        _checked(api.post("/v1/esims", json=body), 200, 201)
        ours = esim.iccid in started
        started.add(esim.iccid)  # before sending: the answer may be lost
        answer = api.post("/v1/balances", json={"iccid": esim.iccid, "product_id": product["id"]})
        if answer.status_code == 409 and answer.json()["error"]["code"] == "balance_open":
            reused += 1
            continue
        _checked(answer, 200, 201)
        if answer.status_code == 200 and not ours:
            reused += 1
            continue
        new += 1
        if pause(SPACING):
            break
    return Seeded(new, reused)


@dataclass(frozen=True)
class Progress:
    """The fleet as the API shows it; None where the API does not serve a figure."""

    open_balances: int
    rotations: int
    early_rotations: int | None
    gap_seconds: float | None
    failing: int


def _balances(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """Every balance, following the list's cursors."""
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = _checked(api.get("/v1/balances", params=params), 200)
        yield from page["data"]
        cursor = page["next_cursor"]
        if cursor is None:
            return


def _fleet_figures(body: dict[str, Any]) -> dict[str, Any]:
    """The fleet totals of a ``GET /v1/continuity`` answer (at the top, or under a key)."""
    for key in ("fleet", "total", "totals"):
        if isinstance(body.get(key), dict):
            inner: dict[str, Any] = body[key]
            return inner
    return body


def read_progress(api: httpx.Client, since: datetime) -> Progress:
    """Balances open and failing from the list; rotations, early rotations and gap seconds
    since ``since`` from the continuity report. Without that report, rotations are the
    balances' own counters (since they started) and early rotations and gaps are unknown.
    """
    balances = list(_balances(api))
    open_balances = sum(b["closed_at"] is None for b in balances)
    failing = sum(b["state"] == "Failing" for b in balances)
    answer = api.get("/v1/continuity", params={"since": since.isoformat()})
    if answer.status_code != 200:  # an API without the report
        rotations = sum(int(b["rotations"]) for b in balances)
        return Progress(open_balances, rotations, None, None, failing)
    fleet = _fleet_figures(answer.json())
    return Progress(
        open_balances,
        int(fleet.get("rotations", 0)),
        _maybe(fleet.get("early_rotations"), int),
        _maybe(fleet.get("gap_seconds"), float),
        failing,
    )


def _maybe(value: Any, kind: Callable[[Any], Any]) -> Any:
    return None if value is None else kind(value)


def progress_line(p: Progress) -> str:
    """One short line: ``24 balances · rotations 37 (9 early by usage) · gap 0 s · failing 0``."""
    early = "" if p.early_rotations is None else f" ({p.early_rotations} early by usage)"
    gap = "n/a" if p.gap_seconds is None else f"{p.gap_seconds:g} s"
    return (
        f"{p.open_balances} balances · rotations {p.rotations}{early} · gap {gap} · "
        f"failing {p.failing}"
    )


class ProgressPrinter:
    """Decides which readings become a line: the first, then a change at most every
    ``PRINT_EVERY`` seconds, except that a change in the failing count shows at once (it
    is what an operator must not miss). An unchanged fleet prints nothing."""

    def __init__(self, every: float = PRINT_EVERY) -> None:
        self.every = every
        self.last: Progress | None = None
        self.last_at = 0.0

    def line(self, p: Progress, now: float) -> str | None:
        """The line to print for this reading at monotonic time ``now``, if any."""
        last = self.last
        if last is not None:
            if p == last:
                return None
            if p.failing == last.failing and now - self.last_at < self.every:
                return None
        self.last, self.last_at = p, now
        return progress_line(p)
