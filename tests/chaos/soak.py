"""The chaos soak: a fleet rotating for ten compressed days while everything fails.

``python -m tests.chaos.soak --seed N`` (or ``tests/chaos/test_soak.py``, marked slow)
starts the product's own stack (``stack.py``: Temporal dev server on a SQLite file, the
three simulators, the worker, the API) in a fresh directory and enrols a fleet, a third
at each carrier, on 30 s passes at Telna and eSIM Go and 60 s passes at Webbing (whose
in-place switch needs a margin longer than a worker's recovery: ``IN_PLACE_MARGIN``).
For ten 30 s "days" it then injects, at seeded random moments:

- SIGKILL of the worker, five times, one of them while an order waits for its activation
  (the supervisor restarts it, as in production);
- a restart of the Temporal dev server (its SQLite file keeps the state);
- a SIGKILL and restart of the API, which receives Telna's webhooks and eSIM Go's
  callbacks;
- one outage per carrier, shorter than the lead time, between two worker kills and away
  from both (see ``plan``): no gap, and throttled time only where the carrier changes
  products in place and the outage held up a switch (``IN_PLACE_RECOVERY``);
- a slow-commit phase at every carrier (25-30 s): every request that changes state takes
  effect 3 s after it arrived, past the client's 2 s timeout, so each order in it is
  unanswered and held in doubt (4 s window) until the carrier shows it;
- three balances' workflows terminated as an operator does (``temporal workflow
  terminate``) and enrolled again at once, two through the API and one through
  ``starter.py enroll``: each new run continues from the database and the carrier;
- throughout: 5 % of carrier requests answered 503 and 2 % whose response is lost after
  the request took effect; every Telna webhook and eSIM Go callback delivered twice,
  each copy up to 2 s late, so some arrive out of order; eSIM Go's rate limit (10 tokens
  a second) met as it comes;
- probes of every API route and the webhook without valid credentials.

Then it stops the faults, cancels every balance and judges DESIGN section 8 from the
simulators' ledgers and timelines and the database (:mod:`tests.chaos.checks`), checks
every workflow run closed properly (but the runs it terminated) and that each balance
enrolled again continued, and scans logs, search attributes and error bodies for
secrets. It prints one summary; ``Summary.problems`` empty means it passed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

import stack
from models.db import session_scope
from models.identifiers import make_iccid
from models.payloads import BalanceStatus, BalanceStatusView
from models.tables import BalanceLine, LineEvent, Product
from temporal_client import exit_with
from tests.chaos import checks
from tests.chaos.security import find_secrets, probe_refusals, search_attribute_texts
from tests.chaos.stackrun import StackRun, make_secrets
from tests.replay import replay_failures

VALIDITY = 30.0  # seconds: one compressed "day"
PRODUCTS = {
    "telna": "telna-compressed-30s",
    "webbing": "webbing-9060",
    "esimgo": "esimgo-esim_3MB_30S_SIM",
}
LEAD, MARGIN = 25.0, 10.0
POLICY = {"lead_seconds": LEAD, "margin_seconds": MARGIN}
# In place (Webbing) nothing is bought ahead: the margin is all the time a switch has, so
# it must cover a worker's recovery after SIGKILL (about 22 s, see ``plan``) and an outage
# (at most OUTAGE_MAX). On real daily passes the default margin is 60 s; here the
# Webbing fleet rides 60 s passes with a 25 s margin (at most half the validity).
IN_PLACE_MARGIN = 25.0
POLICIES = {
    "telna": POLICY,
    "webbing": {"lead_seconds": 30.0, "margin_seconds": IN_PLACE_MARGIN},
    "esimgo": POLICY,
}
# Heavy users (at Telna and eSIM Go, queued carriers) use 1.2 allowances a validity: each
# pass is used up 25 s into its 30 s. The carrier then ends it and starts the next one,
# bought ahead at 25 % of the allowance (about 6 s into the line); the workflow only
# confirms the switch, an early rotation by usage. That purchase must come before the
# pass is used up: 19 s of slack, more than an outage (at most 12 s) or a worker's
# recovery after SIGKILL (about 22 s, less the confirmation it overlaps).
HEAVY_POLICY = POLICY | {"preorder_fraction": 0.25, "switch_fraction": 0.4}
HEAVY_SHARE, MEDIUM_SHARE = 1.2, 0.9  # allowances per validity
ERRORS = {"error_rate": 0.05, "lose_responses": 0.02}
WEBHOOK_FAULTS = {"webhook_duplicate_rate": 1.0, "webhook_delay_seconds": 2.0}
WEBHOOK_CARRIERS = ("telna", "esimgo")  # Telna's SNS webhooks, eSIM Go's usage callbacks
KILLS = 5
KILL_SPACING = 62.0  # the supervisor's restart delay resets after 60 s up
# An outage (at most OUTAGE_MAX s) keeps this far from the kills on either side: the
# orders a kill delayed are placed before it, and those it delayed before the next kill.
OUTAGE_MAX, OUTAGE_AFTER_KILL, OUTAGE_BEFORE_KILL = 12.0, 35.0, 10.0
# The slow commit: a write is answered after SLOW_COMMIT_MS, past the carrier client's
# timeout (CARRIER_TIMEOUT_SECONDS), so the order is unanswered and held in doubt for the
# in-doubt window (IN_DOUBT_SECONDS, plus the 5 s an order may wait to leave), adopted as
# soon as the carrier shows it; the window is above the delay, so nothing is bought
# twice. An order is about 8 s late, activations about 5 s: as an outage, the phase keeps
# away from the kills, 35 s after one and 12 s (its doubts' tail) before the next, in a
# gap of its own that is widened to hold it.
SLOW_COMMIT_MS, SLOW_SECONDS = 3000, (25.0, 30.0)
SLOW_AFTER_KILL, SLOW_BEFORE_KILL = 35.0, 12.0
CARRIER_TIMEOUT_SECONDS, IN_DOUBT_SECONDS = 2, 4
# A product change at Webbing shows only once in effect, its activation latency after the
# commit (up to 5 % of the 60 s pass in the simulator), so its in-doubt window must cover
# both (README, "What each carrier can do"): at 4 s a change committed 3 s late could
# still be invisible when the window closed, and be bought again.
WEBBING_IN_DOUBT_SECONDS = SLOW_COMMIT_MS / 1000 + 0.05 * 60 + 1
# Terminated and enrolled again, once the orders a kill delayed are placed (about 22 s)
# and before an outage may begin in the same gap (35 s).
REENROLMENTS, TERMINATE_AFTER_KILL = 3, (22.0, 26.0)
# What fills each of the four gaps between the five kills, one each (shuffled).
GAP_ROLES = ("restart-temporal", "restart-api", "slow-commit", "terminate")
# In place (Webbing) nothing is bought ahead: the product change is the switch, so an
# outage over a switch leaves the device on its spent pass, throttled, until the change
# after it takes effect (README, "What each carrier can do"). That time is excused from
# the outage's start until this long after its end: a retry (at most a tenth of the lead),
# the carrier's latency and the confirmation poll. A gap is never excused.
IN_PLACE_RECOVERY = 10.0
STACK_SETTINGS = {
    "USAGE_POLL_INTERVAL_SECONDS": "2",
    "AUDIT_INTERVAL_SECONDS": "30",
    "WORKER_LOG_LEVEL": "INFO",
    "CARRIER_TIMEOUT_SECONDS": str(CARRIER_TIMEOUT_SECONDS),
    "TELNA__IN_DOUBT_SECONDS": str(IN_DOUBT_SECONDS),
    "WEBBING__IN_DOUBT_SECONDS": str(WEBBING_IN_DOUBT_SECONDS),
    "ESIMGO__IN_DOUBT_SECONDS": str(IN_DOUBT_SECONDS),
}
TEMPORAL_CLI = str(Path(sys.executable).parent / "temporal")


@dataclass(order=True)
class Fault:
    """One planned fault: seconds after the fleet is enrolled, and what."""

    at: float
    kind: str
    detail: str = ""


@dataclass
class Esim:
    iccid: str
    carrier: str
    heavy: bool
    balance_id: str = ""
    enrolment: dict[str, Any] = field(default_factory=dict)  # POST /v1/balances's body


@dataclass
class Summary:
    """What the soak did and found; ``problems`` empty means every check held."""

    seed: int
    esims: int = 0
    days: float = 0.0
    faults: Counter[str] = field(default_factory=Counter)
    injected: dict[str, dict[str, Any]] = field(default_factory=dict)
    webhooks: dict[str, Any] = field(default_factory=dict)
    killed_between_order_and_activation: list[str] = field(default_factory=list)
    reenrolled: list[str] = field(default_factory=list)  # balance ids
    unanswered_orders: int = 0  # orders the client gave up on: held in doubt
    other_timeouts: int = 0  # carrier calls the client gave up on outside the slow commit
    rotations: int = 0
    early_rotations: int = 0
    gap_seconds: float = 0.0
    throttled_seconds: float = 0.0
    throttled_in_outage_seconds: float = 0.0  # in place, during its carrier's outage
    duplicate_orders: int = 0
    longest_overlap_seconds: float = 0.0
    disagreements: int = 0
    missing_ledger_events: int = 0
    improper_workflows: int = 0
    replay_failures: int = 0
    probes: int = 0
    refused: int = 0
    secrets_found: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def slow_commits(self) -> int:
        """Writes the carriers committed late."""
        return sum(int(v.get("commit_delay", 0)) for v in self.injected.values())

    def lines(self) -> list[str]:
        f = self.faults
        return [
            f"[soak] seed {self.seed}: {self.esims} eSIMs for {self.days:.1f} days "
            f"of {VALIDITY:.0f}s in {self.seconds:.0f}s",
            f"[soak] faults: worker SIGKILL {f['kill-worker']} "
            f"({len(self.killed_between_order_and_activation)} between order and activation: "
            f"{', '.join(self.killed_between_order_and_activation)}), Temporal restart "
            f"{f['restart-temporal']}, API restart {f['restart-api']}, carrier outages "
            f"{f['outage']}, slow commits {self.slow_commits} ({self.unanswered_orders} "
            f"orders held in doubt; {self.other_timeouts} client timeouts outside the phase), "
            f"terminated and re-enrolled {len(self.reenrolled)}, "
            f"security probes {self.probes} ({self.refused} refused)",
            "[soak] carriers injected: "
            + "; ".join(f"{c} {json.dumps(v, sort_keys=True)}" for c, v in self.injected.items()),
            f"[soak] webhooks: {json.dumps(self.webhooks, sort_keys=True)}",
            f"[soak] rotations {self.rotations} ({self.early_rotations} early by usage) · "
            f"gap {self.gap_seconds:.3f}s · throttled {self.throttled_seconds:.3f}s "
            f"({self.throttled_in_outage_seconds:.3f}s in place during an outage) · "
            f"duplicate orders {self.duplicate_orders} · longest overlap "
            f"{self.longest_overlap_seconds:.1f}s · disagreements {self.disagreements} · "
            f"missing ledger events {self.missing_ledger_events} · improper workflows "
            f"{self.improper_workflows} · runs that do not replay {self.replay_failures} · "
            f"secrets found {self.secrets_found}",
            f"[soak] {'PASSED' if not self.problems else f'FAILED: {len(self.problems)} problems'}",
            *(f"[soak]   {p}" for p in self.problems[:40]),
        ]


def plan(rng: random.Random, window: float) -> list[Fault]:
    """Seeded fault moments within the window: five worker kills a minute apart (one of
    them after an order); in the four gaps between them, one each, in a seeded order: the
    Temporal restart, the API restart, the slow-commit phase and the terminate +
    re-enrolment; one outage per carrier (6-12 s: shorter than the lead) in the gap of the
    API restart or of the re-enrolment; and security probes.

    Each fault is one the product promises to ride out with no gap (DESIGN section 8);
    two of them within one lead window are not. On these 30 s passes an order is due 5 s
    after the switch, so a kill during a switch's tail delays that order by up to about
    22 s (sticky timeout, heartbeat timeout, replay): an outage starting then pushes it
    past the line's end. So an outage starts at least ``OUTAGE_AFTER_KILL`` after one
    kill and ends ``OUTAGE_BEFORE_KILL`` before the next, between two kills that have no
    Temporal restart or slow commit between them; the slow commit keeps the same
    distances (``SLOW_AFTER_KILL``, ``SLOW_BEFORE_KILL``), its gap widened to hold it."""
    assert len(GAP_ROLES) == KILLS - 1
    roles = rng.sample(GAP_ROLES, len(GAP_ROLES))
    slow = rng.uniform(*SLOW_SECONDS)
    kills, at = [], rng.uniform(12, 25)
    for i in range(KILLS):
        kills.append(at)
        spacing = KILL_SPACING + rng.uniform(0, 2)
        if i < len(roles) and roles[i] == "slow-commit":
            spacing = max(spacing, SLOW_AFTER_KILL + slow + SLOW_BEFORE_KILL)
        at += spacing
    between = rng.randrange(KILLS)
    faults = [
        Fault(t, "kill-worker", "after-order" if i == between else "") for i, t in enumerate(kills)
    ]
    for i, role in enumerate(roles):
        kill, following = kills[i], kills[i + 1]
        if role in ("restart-temporal", "restart-api"):
            faults.append(Fault(kill + rng.uniform(25, 37), role))
        elif role == "slow-commit":
            room = following - SLOW_BEFORE_KILL - slow - kill - SLOW_AFTER_KILL
            start = kill + SLOW_AFTER_KILL + rng.uniform(0, max(0.0, room))
            faults.append(Fault(start, "slow-commit", f"{slow:.1f}"))
            faults.append(Fault(start + slow, "slow-commit-over"))
        else:
            faults.append(Fault(kill + rng.uniform(*TERMINATE_AFTER_KILL), "terminate"))
    quiet = [i for i, role in enumerate(roles) if role in ("restart-api", "terminate")]
    for carrier in PRODUCTS:
        seconds = rng.uniform(6, OUTAGE_MAX)
        after = rng.choice(quiet)
        room = kills[after + 1] - OUTAGE_BEFORE_KILL - seconds - kills[after] - OUTAGE_AFTER_KILL
        start = kills[after] + OUTAGE_AFTER_KILL + rng.uniform(0, max(0.0, room))
        faults.append(Fault(start, "outage", f"{carrier}:{seconds:.1f}"))
    faults += [Fault(t, "probe") for t in (5.0, window / 2, window - 5)]
    return sorted(faults)


def fleet(rng: random.Random, size: int) -> list[Esim]:
    """A third at each carrier; every fifth Telna and eSIM Go eSIM a heavy user (their
    passes used up before their end: Telna's webhooks, eSIM Go's callbacks)."""
    base = rng.randrange(10**9)
    esims = []
    for i in range(size):
        carrier = list(PRODUCTS)[i % 3]
        iccid = make_iccid(f"8944{base:09d}{i:05d}")
        heavy = carrier != "webbing" and (i // 3) % 5 == 0
        esims.append(Esim(iccid, carrier, heavy=heavy))
    return esims


class Soak:
    """One run: the stack, the fleet, the faults, the end checks."""

    def __init__(self, seed: int, size: int, days: float, data: Path) -> None:
        self.seed, self.size, self.days = seed, size, days
        self.rng = random.Random(seed)
        self.secrets = make_secrets()
        self.stack = StackRun(data, STACK_SETTINGS, self.secrets)
        self.summary = Summary(seed)
        self.esims = fleet(self.rng, size)
        self.window = days * VALIDITY
        self.operator = self.secrets["API_KEYS"].split(",")[0].split(":", 1)[1]
        self.bodies: list[str] = []
        self.slow = False  # the carriers commit slowly now
        self.terminated: set[tuple[str, str]] = set()  # (workflow id, run id)
        self.slow_window: tuple[float, float] | None = None  # epoch seconds
        self.outages: dict[str, tuple[datetime, datetime]] = {}  # carrier: (start, end)

    # --- helpers -------------------------------------------------------------------------

    def api(self) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.operator}"}
        return httpx.AsyncClient(base_url=self.stack.api_url, headers=headers, timeout=30.0)

    def sim(self, carrier: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.stack.sim_url(carrier), timeout=30.0)

    def say(self, text: str) -> None:
        print(f"[soak] {time.strftime('%H:%M:%S')} {text}", flush=True)

    async def _call(self, client: httpx.AsyncClient, method: str, url: str, **kw: Any) -> Any:
        """A request that must succeed; retried while a service restarts."""
        for attempt in range(40):
            try:
                response = await client.request(method, url, **kw)
                if response.status_code < 500:
                    if response.is_error:
                        raise RuntimeError(
                            f"{method} {url}: {response.status_code} {response.text}"
                        )
                    return response.json() if response.content else None
            except httpx.TransportError:
                pass
            await asyncio.sleep(min(0.5 * (attempt + 1), 3.0))
        raise RuntimeError(f"{method} {url} kept failing")

    # --- phases --------------------------------------------------------------------------

    async def enrol(self) -> None:
        async with self.api() as api:
            for carrier in PRODUCTS:
                async with self.sim(carrier) as sim:
                    iccids = [e.iccid for e in self.esims if e.carrier == carrier]
                    await self._call(sim, "POST", "/_sim/esims", json={"iccids": iccids})
                    for esim in self.esims:
                        if esim.carrier != carrier:
                            continue
                        share = HEAVY_SHARE if esim.heavy else MEDIUM_SHARE
                        allowance = 3_000_000
                        rate = share * allowance / VALIDITY
                        traffic = {"iccid": esim.iccid, "bytes_per_second": rate}
                        await self._call(sim, "POST", "/_sim/traffic", json=traffic)
            for esim in self.esims:
                await self._call(
                    api, "POST", "/v1/esims", json={"iccid": esim.iccid, "carrier": esim.carrier}
                )
                esim.enrolment = body = {
                    "iccid": esim.iccid,
                    "product_id": PRODUCTS[esim.carrier],
                    "policy": HEAVY_POLICY if esim.heavy else POLICIES[esim.carrier],
                }
                started = await self._call(api, "POST", "/v1/balances", json=body)
                esim.balance_id = started["id"]
        # Ten days each: the window starts once every first line is active.
        fleet_iccids = {e.iccid for e in self.esims}
        for _ in range(120):
            entries = [e for ledger in (await self.ledgers()).values() for e in ledger]
            if fleet_iccids <= {e["iccid"] for e in entries if e["action"] == "activate"}:
                return
            await asyncio.sleep(0.5)
        raise RuntimeError("first lines not all active within 60 s")

    async def set_faults(self, carrier: str, outage: float = 0.0) -> None:
        """The carrier's faults as a whole: the errors, and the outage or slow commit."""
        body = dict(ERRORS) | ({"outage_seconds": outage} if outage else {})
        body |= {"commit_delay_ms": SLOW_COMMIT_MS} if self.slow else {}
        async with self.sim(carrier) as sim:
            await self._call(sim, "POST", "/_sim/faults", json=body)

    async def ledgers(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        for carrier in PRODUCTS:
            async with self.sim(carrier) as sim:
                out[carrier] = (await self._call(sim, "GET", "/_sim/ledger"))["entries"]
        return out

    async def kill_worker(self, after_order: bool) -> None:
        if after_order:
            package = await self._pending_order()
            self.summary.killed_between_order_and_activation.append(package)
        old = self.stack.kill("worker")
        new = self.stack.wait_restarted("worker", old, timeout=60)
        self.say(f"worker {old} killed (SIGKILL); restarted as {new}")

    async def _pending_order(self) -> str:
        """Wait for a line ordered and not yet activated; the carrier's package id (the
        ledger's reference is null where the carrier keeps none)."""
        iccids = {esim.iccid for esim in self.esims}
        for _ in range(150):
            ledger = [e for entries in (await self.ledgers()).values() for e in entries]
            activated = {e["package_id"] for e in ledger if e["action"] == "activate"}
            ended = {e["package_id"] for e in ledger if e["action"] in checks.ENDS}
            pending = [
                e
                for e in ledger
                if e["action"] == "order"
                and e["package_id"] not in activated | ended
                and e["iccid"] in iccids
            ]
            if pending:
                return str(pending[-1]["package_id"])
            await asyncio.sleep(0.1)
        raise RuntimeError("no order waited for its activation within 15 s")

    async def restart(self, service: str, sig: signal.Signals) -> None:
        old = self.stack.kill(service, sig)
        new = self.stack.wait_restarted(service, old, timeout=60)
        self.say(f"{service} {old} stopped ({sig.name}); restarted as {new}")

    async def probe(self) -> None:
        probe = await probe_refusals(
            self.stack.api_url,
            valid_key=self.operator,
            telna_webhook_secret=self.secrets["TELNA__WEBHOOK_SECRET"],
            api_keys=self.secrets["API_KEYS"],
        )
        self.summary.probes += probe.requests
        self.summary.refused += probe.refusals
        self.summary.problems += [f"security: {p}" for p in probe.problems + probe.skipped]
        self.bodies += probe.bodies

    async def inject(self, fault: Fault) -> None:
        self.summary.faults[fault.kind] += 1
        if fault.kind == "kill-worker":
            await self.kill_worker(fault.detail == "after-order")
        elif fault.kind == "restart-temporal":
            await self.restart("temporal", signal.SIGTERM)
        elif fault.kind == "restart-api":
            await self.restart("api", signal.SIGKILL)
        elif fault.kind == "outage":
            carrier, seconds = fault.detail.split(":")
            await self.set_faults(carrier, float(seconds))
            start = datetime.now(UTC)
            self.outages[carrier] = (start, start + timedelta(seconds=float(seconds)))
            self.say(f"{carrier} down for {seconds}s")
        elif fault.kind in ("slow-commit", "slow-commit-over"):
            self.slow = fault.kind == "slow-commit"
            for carrier in PRODUCTS:
                await self.set_faults(carrier)
            if self.slow:
                self.slow_window = (time.time(), time.time() + float(fault.detail))
                self.say(f"carriers commit writes {SLOW_COMMIT_MS} ms late for {fault.detail}s")
            else:
                self.say("carriers commit at once again")
        elif fault.kind == "terminate":
            await self.terminate_and_enrol_again()
        elif fault.kind == "probe":
            await self.probe()

    # --- terminated by hand, enrolled again ----------------------------------------------

    async def terminate_and_enrol_again(self) -> None:
        """What an operator does to a stuck balance: terminate its workflow from the
        Temporal CLI, then enrol the eSIM again, through the API (two balances) or
        ``starter.py enroll`` (one); each is chosen at a quiet moment of its rotation."""
        client = await Client.connect(
            self.stack.temporal_address, data_converter=pydantic_data_converter
        )
        chosen = await self._quiet(client)
        for i, (esim, moment) in enumerate(chosen):
            run_id = await self._terminate(client, esim)
            by_starter = i == len(chosen) - 1
            problem = await (self._enrol_by_starter(esim) if by_starter else self._enrol(esim))
            if problem:
                self.summary.problems.append(f"re-enrolment of {esim.iccid}: {problem}")
            self.summary.reenrolled.append(esim.balance_id)
            how = "starter.py enroll" if by_starter else "POST /v1/balances"
            self.say(
                f"{esim.balance_id} ({esim.iccid}; {moment}): run {run_id} terminated; {how} again"
            )

    async def _quiet(self, client: Client) -> list[tuple[Esim, str]]:
        """Balances at quiet moments, each with a note of its moment: one asleep until
        its order, one holding its next line (each a few seconds from its next deadline),
        and the one furthest from its next deadline, for the starter (which takes seconds
        to start). Heavy users are left out: usage moves their switch."""
        now = datetime.now(UTC)
        slack: list[tuple[float, bool, Esim, str]] = []  # left, holding a line, ...
        for esim in self.rng.sample(self.esims, len(self.esims)):
            handle = client.get_workflow_handle(f"balance-{esim.iccid}")
            view = await handle.query("status", result_type=BalanceStatusView)
            if esim.heavy or view.status != BalanceStatus.Active or view.active is None:
                continue
            # Its next deadline: the order while nothing is scheduled, else the switch.
            if view.scheduled is None:
                deadline, moment = view.order_at, f"line {view.active.seq} before its order"
            else:
                deadline, moment = view.switch_at, f"line {view.scheduled.seq} ordered"
            left = ((deadline or now) - now).total_seconds()
            holds = view.scheduled is not None
            slack.append((left, holds, esim, f"{moment}, {left:.0f}s to its next deadline"))
        asleep = [(e, m) for t, holds, e, m in slack if not holds and t > 2]
        holding = [(e, m) for t, holds, e, m in slack if holds and t > 5]
        chosen = [kind[0] for kind in (asleep, holding) if kind][: REENROLMENTS - 1]
        taken = {e.iccid for e, _ in chosen}
        furthest = [
            (e, m) for _, _, e, m in sorted(slack, key=lambda x: -x[0]) if e.iccid not in taken
        ]
        return chosen + furthest[: REENROLMENTS - len(chosen)]

    async def _terminate(self, client: Client, esim: Esim) -> str:
        """``temporal workflow terminate`` of the balance's current run; its run id."""
        handle = client.get_workflow_handle(f"balance-{esim.iccid}")
        error = ""
        for _ in range(3):  # the run may continue as new meanwhile: terminate the next
            run_id = (await handle.describe()).run_id
            command = [TEMPORAL_CLI, "workflow", "terminate", "--workflow-id", handle.id]
            command += ["--run-id", run_id, "--address", self.stack.temporal_address]
            command += ["--reason", "chaos soak: stuck, says the operator"]
            done = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
            )
            out, err = await asyncio.wait_for(done.communicate(), timeout=30)
            if done.returncode == 0:
                self.terminated.add((handle.id, run_id))
                return run_id
            error = (err or out).decode(errors="replace").strip()
        raise RuntimeError(f"temporal workflow terminate {handle.id} failed: {error}")

    async def _enrol(self, esim: Esim) -> str:
        """POST /v1/balances again with the same body: 200 and the same balance, or why not."""
        async with self.api() as api:
            for attempt in range(20):
                try:
                    answer = await api.post("/v1/balances", json=esim.enrolment)
                except httpx.TransportError:
                    answer = None
                if answer is not None and answer.status_code < 500:
                    if answer.status_code != 200:
                        return f"POST /v1/balances: {answer.status_code} {answer.text}"
                    if answer.json()["id"] != esim.balance_id:
                        return f"enrolled as {answer.json()['id']}, not {esim.balance_id}"
                    return ""
                await asyncio.sleep(min(0.5 * (attempt + 1), 3.0))
        return "POST /v1/balances kept failing"

    async def _enrol_by_starter(self, esim: Esim) -> str:
        """``starter.py enroll`` for the eSIM, as an operator types it; why not, if not."""
        env = self.stack.env | {
            "DATABASE_URL": f"sqlite:///{self.stack.data / 'esim_balance.db'}",
            "TEMPORAL_ADDRESS": self.stack.temporal_address,
        }
        command = [sys.executable, "starter.py", "enroll", "--carrier", esim.carrier]
        command += ["--iccid", esim.iccid, "--product", PRODUCTS[esim.carrier]]
        done = await asyncio.create_subprocess_exec(
            *command,
            cwd=stack.ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(done.communicate(), timeout=60)
        said = out.decode(errors="replace").strip()
        if done.returncode != 0:
            return f"starter.py exited {done.returncode}: {err.decode(errors='replace')}"
        if said != f"{esim.balance_id} (already enrolled)":
            return f"starter.py said {said!r}"
        return ""

    async def chaos(self) -> None:
        for carrier in PRODUCTS:
            await self.set_faults(carrier)
        for carrier in WEBHOOK_CARRIERS:
            async with self.sim(carrier) as sim:
                await self._call(sim, "POST", "/_sim/config", json=WEBHOOK_FAULTS)
        began = time.monotonic()
        for fault in plan(self.rng, self.window):
            await asyncio.sleep(max(0.0, began + fault.at - time.monotonic()))
            await self.inject(fault)
        await asyncio.sleep(max(0.0, began + self.window - time.monotonic()))

    async def settle(self) -> None:
        """Faults off; every balance running and none failing, then each one cancelled."""
        for carrier in PRODUCTS:
            async with self.sim(carrier) as sim:
                injected = (await self._call(sim, "GET", "/_sim/faults"))["injected"]
                self.summary.injected[carrier] = injected
                await self._call(sim, "POST", "/_sim/faults", json={})
        for carrier in WEBHOOK_CARRIERS:
            async with self.sim(carrier) as sim:
                config = await self._call(sim, "GET", "/_sim/config")
                self.summary.webhooks[carrier] = config["webhooks"]
        client = await Client.connect(self.stack.temporal_address)
        deadline = time.monotonic() + 60
        while True:
            failing = [
                w.id
                async for w in client.list_workflows(
                    "WorkflowType = 'BalanceWorkflow' AND ExecutionStatus = 'Running' "
                    "AND BalanceState = 'Failing'"
                )
            ]
            running = [
                w.id
                async for w in client.list_workflows(
                    "WorkflowType = 'BalanceWorkflow' AND ExecutionStatus = 'Running'"
                )
            ]
            if not failing and len(running) == len(self.esims):
                break
            if time.monotonic() > deadline:
                self.summary.problems.append(
                    f"after the faults: {len(running)} of {len(self.esims)} balances running, "
                    f"{len(failing)} failing ({', '.join(failing[:5])})"
                )
                break
            await asyncio.sleep(1)
        self.closed_at = datetime.now(UTC)
        async with self.api() as api:
            for esim in self.esims:
                await self._call(api, "POST", f"/v1/balances/{esim.balance_id}/cancel", json={})
        for esim in self.esims:
            handle = client.get_workflow_handle(f"balance-{esim.iccid}")
            try:
                await asyncio.wait_for(handle.result(), timeout=90)
            except Exception as error:  # reported, then judged by the checks below
                self.summary.problems.append(f"balance {esim.iccid} did not close: {error!r}")
        await asyncio.sleep(2)  # the carriers' last ledger entries
        self.client = client

    async def judge(self) -> None:
        s = self.summary
        ledgers = await self.ledgers()
        entries = [e for carrier in PRODUCTS for e in ledgers[carrier]]
        iccids = {e.iccid for e in self.esims}
        lines, events = self.database()
        dup = checks.duplicate_orders(entries, lines, iccids)
        s.duplicate_orders = len(dup)
        spans = checks.active_spans(entries, datetime.now(UTC))
        over, s.longest_overlap_seconds = checks.overlaps(spans, MARGIN + 60)  # in place, none
        disagree = checks.agreement(entries, lines, iccids)
        s.disagreements = len(disagree)
        missing = checks.missing_ledger_events(entries, lines, events)
        s.missing_ledger_events = len(missing)
        gaps: list[str] = []
        in_place = await self.in_place_products()
        async with contextlib.AsyncExitStack() as stack:
            sims = {c: await stack.enter_async_context(self.sim(c)) for c in PRODUCTS}
            for esim in self.esims:
                timeline = await self._call(
                    sims[esim.carrier], "GET", f"/_sim/timeline/{esim.iccid}"
                )
                gap, throttled, high = checks.coverage(timeline["intervals"], self.closed_at)
                s.gap_seconds += gap
                s.throttled_seconds += throttled
                excused = []
                if PRODUCTS[esim.carrier] in in_place and esim.carrier in self.outages:
                    start, end = self.outages[esim.carrier]
                    excused = [(start, end + timedelta(seconds=IN_PLACE_RECOVERY))]
                unexcused = checks.outside(
                    timeline["intervals"], "throttled", excused, self.closed_at
                )
                s.throttled_in_outage_seconds += throttled - unexcused
                if gap or unexcused > checks.TICK:
                    when = ", ".join(
                        f"{i['state']} from {i['start'][11:23]}"
                        for i in timeline["intervals"]
                        if i["state"] != "high_speed"
                    )
                    gaps.append(
                        f"{esim.iccid} ({esim.balance_id}): gap {gap:.3f}s, "
                        f"throttled {throttled:.3f}s ({when} UTC)"
                    )
                if gap + throttled + high < self.window:
                    open_seconds = gap + throttled + high
                    gaps.append(f"{esim.iccid}: open {open_seconds:.0f}s, under {self.days:g} days")
        activations = Counter(e["iccid"] for e in entries if e["action"] == "activate")
        s.rotations = sum(max(0, n - 1) for i, n in activations.items() if i in iccids)
        s.early_rotations = sum(1 for e in events if e.kind == "activated" and e.reason == "usage")
        improper = await self.improper_workflows()
        improper += checks.not_continued(events, s.reenrolled)
        s.improper_workflows = len(improper)
        s.unanswered_orders, s.other_timeouts = self.timeouts()
        unreplayable = await replay_failures(self.client, keep=self.stack.data / "unreplayable")
        s.replay_failures = len(unreplayable)
        found = await self.secrets_found()
        s.secrets_found = len(found)
        s.problems += dup + over + disagree + missing + gaps + improper + unreplayable + found

    async def in_place_products(self) -> set[str]:
        """The fleet's products whose carrier replaces a device's product in place, as
        ``GET /v1/products`` declares them."""
        async with self.api() as api:
            products = await self._call(api, "GET", "/v1/products")
        return {p["id"] for p in products["data"] if p["rotation"] == "in_place"}

    def database(self) -> tuple[list[checks.DbLine], list[checks.DbEvent]]:
        url = f"sqlite:///{self.stack.data / 'esim_balance.db'}"
        with session_scope(url) as session:
            rotation = {p.id: p.rotation for p in session.exec(select(Product)).all()}
            lines = [
                checks.DbLine(
                    r.balance_id,
                    r.iccid,
                    r.seq,
                    r.reference,
                    r.carrier_line_id,
                    r.state,
                    r.activated_at,
                    rotation.get(r.product_id) == "in_place",
                )
                for r in session.exec(select(BalanceLine)).all()
            ]
            events = [
                checks.DbEvent(r.key, r.balance_id, r.seq, r.kind, r.detail.get("reason"))
                for r in session.exec(select(LineEvent)).all()
            ]
        return lines, events

    async def improper_workflows(self) -> list[str]:
        """Every run of every workflow completed, continued as new, or still running (the
        schedules' pollers): none failed, timed out or was cancelled, and none was
        terminated but the runs the soak terminated itself."""
        runs = [
            checks.Run(run.id, run.run_id, run.workflow_type, run.status.name if run.status else "")
            async for run in self.client.list_workflows("")
        ]
        return checks.improper_runs(runs, self.terminated)

    def timeouts(self) -> tuple[int, int]:
        """Orders unanswered within the slow commit (each held in doubt), and carrier
        calls timed out outside it (a 2 s client timeout meeting nothing but load)."""
        found = checks.client_timeouts(self.stack.logs().get("worker.log", ""))
        if self.slow_window is None:
            return 0, len(found)
        began, ended = (datetime.fromtimestamp(t) for t in self.slow_window)
        ended += timedelta(seconds=CARRIER_TIMEOUT_SECONDS + 1)  # its last writes' answers
        within = [t for t in found if began <= t.at <= ended]
        return sum(t.activity == "order_line" for t in within), len(found) - len(within)

    async def secrets_found(self) -> list[str]:
        texts = self.stack.logs()
        texts |= await search_attribute_texts(self.client, "")
        texts |= {f"error body {i}": body for i, body in enumerate(self.bodies)}
        named = {name: value for name, value in self.secrets.items() if name != "API_KEYS"}
        for i, pair in enumerate(self.secrets["API_KEYS"].split(",")):
            named[f"API_KEYS[{i}]"] = pair.split(":", 1)[1]
        return [f"secret: {line}" for line in find_secrets(named, texts)]

    async def run(self) -> Summary:
        began = time.monotonic()
        self.stack.wait_for("[stack] ready", timeout=120)
        self.say(f"stack up in {time.monotonic() - began:.0f}s ({self.stack.data})")
        await self.enrol()
        self.say(f"{len(self.esims)} balances started; chaos for {self.window:.0f}s")
        await self.chaos()
        self.say("faults off; settling and cancelling")
        await self.settle()
        await self.judge()
        self.summary.esims = len(self.esims)
        self.summary.days = self.days
        self.summary.seconds = time.monotonic() - began
        return self.summary


async def soak(seed: int, size: int = 50, days: float = 10, data: Path | None = None) -> Summary:
    """Run the soak once; the stack is always stopped, whatever happened."""
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        run = Soak(seed, size, days, data or Path(tmp))
        try:
            summary = await run.run()
        finally:
            code = run.stack.stop()
        if code != 0:
            summary.problems.append(f"stack.py exited with {code} on Ctrl-C")
        if summary.problems and data is None:
            # The stack's database, logs and the simulators' state: what a failure needs.
            kept = Path(tempfile.gettempdir()) / f"soak-failed-{seed}-{int(time.time())}"
            with contextlib.suppress(OSError):  # what could be copied is there
                shutil.copytree(tmp, kept, ignore_dangling_symlinks=True)
            summary.problems.append(f"its files are kept in {kept}")
        for line in summary.lines():
            print(line, flush=True)
        return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Chaos soak of the whole stack.")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--esims", type=int, default=50)
    parser.add_argument("--days", type=float, default=10)
    parser.add_argument("--data-dir", type=Path, help="keep the stack's files here")
    args = parser.parse_args(argv)
    summary = asyncio.run(soak(args.seed, args.esims, args.days, args.data_dir))
    return 0 if not summary.problems else 1


if __name__ == "__main__":
    exit_with(main)
