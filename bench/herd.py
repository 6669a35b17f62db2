"""The midnight herd: N balances whose lines all end in the same second (DESIGN section 9).

    python -m bench.herd --balances 1000 --json herd-1000.json

Daily passes that reset at 00:00 UTC all end at once. This runs that moment on a private
dev server against the three simulators (as processes, a third of the balances at each
carrier),
with carrier behaviour scaled down to a compressed day of ``--period`` seconds (30, 120,
600, 1800 or 3600; by default the shortest in which N balances can be enrolled before the
boundary at ``--bring-up-rate`` enrolments/s): activation latency in proportion to the
day (the simulators' 1-5 % of it), Webbing's usage lag, a small error rate
(``--error-rate``, 503s the clients retry) and a per-carrier rate limit
(``--rate-limit``) that the clients are configured to keep and the simulators enforce
with 429s, counted in the result.

eSIM Go is in the mix under its own rate limit, not ``--rate-limit``: 10 tokens a second
per client IP (the simulator's default; an order costs 2, a read 1), which its client
keeps by the product's setting (10 requests/s) and by the limit's headers, waiting out a
429's ``Retry-After``. Its bundles roll from their start (CARRIERS.md 4.3): there is no
eSIM Go midnight, and its third of the herd rides a bundle as long as the compressed day
whose lines end as the bring-up started them, in the seconds after B while the boundary
herd switches. The product spreads only boundary orders over the lead window
(``workflows.timing.order_at``); eSIM Go's orders, ``lead`` before each line's end, come
as spread as the starts were, and the starts were paced by the same limit: the run
chooses a day long enough for eSIM Go's share at about 6 tokens a first line at 10 a
second (:func:`esimgo_spread`, N/3 x 0.6 s: 60 s for 300 balances, 200 s for 1,000), both
before the lead window and after B within the herd's deadline. The JSON gives, per
carrier (``by_carrier``), the gaps, when its last balance switched, over how many seconds
its line-2 orders came and the most in one second, its calls per rotation, and the 429s
its client met (``carrier_429s_answered``, all carriers; ``carrier_429s`` stays what the
simulators' ``--rate-limit`` fault refused). ``rotations_per_second``,
``switch_seconds_after_boundary`` and the confirmation times are the boundary herd's
(Telna and Webbing, whose lines all end at B); ``rotations``, gaps and duplicates are the
whole herd's.

Phases, all in one run; the product's worker is this process and holds nothing else:

1. bare engine: ``BareWorkflow`` loops (one timer, three no-op activities per rotation)
   for ``--bare-seconds``, after the herd and, when the boundary leaves time for it,
   before it too; the faster of the two is the engine's capacity here (a shared box
   slowed one bare loop to half another's rate, and a slow bare loop must not make the
   product look efficient).
2. herd: N balances enrolled on a two-line term of a UTC-boundary pass, so every first
   line ends at the same boundary B; line 2 is ordered in the lead window before B and
   the switch at B is measured. Enrolment keeps at most ``--bring-up-window`` balances
   waiting for a first line (default 1,500, at most 3/4 of the worker's workflow
   cache). A small side sample of balances on the 120 s pass does two rotations, so one
   of its runs is a whole steady-state rotation: that run gives
   ``history_events_per_rotation``.
3. naive baseline, in a process of its own (``bench/naive.py``: own task queue, worker
   and carrier account): ``--baseline-balances`` (default N) ``NaiveWorkflow`` balances,
   which order and activate line 2 only once line 1 has expired (a sweep-based design),
   on the same pass at UTC+8: their midnight comes a third of a day before B, so the two
   herds do not share the box's two cores and each design's figures are its own. Its
   balances are at Telna and Webbing, half each: what it compares is meeting a boundary.

Gaps come from the carriers' own records (``/_sim/packages``): for each eSIM, the time
between line 1's end and line 2's activation, each package's seq that of the database's
line holding it (the naive baseline's, which keeps no database, by when it was bought).
Duplicate orders are packages no line holds (``bench/purchases.py``). Carrier calls are
the HTTP requests the worker's carrier clients sent from the end of enrolment until the
herd had switched. Activity retries (``activity_retries``) are read from the herd's
histories: attempts after the first, by activity, and how many followed an attempt the
server had timed out.
Memory is this process's (the worker's): ``worker_kb_per_balance`` with every balance
open before the boundary, ``worker_peak_kb_per_balance`` at its high-water mark once the
herd has switched, both over the resident size before the worker started.
Bounded: every wait has a deadline (the herd must finish within 0.9 of a period after B) and
everything started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import col
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from bench.baselines import BareInput, BareWorkflow, noop
from bench.common import (
    ESIMGO_VERSION,
    activity_retries,
    bench_iccids,
    bench_settings,
    carrier_clients,
    dev_server,
    gather_limited,
    history_cache_args,
    history_events_per_rotation,
    report,
    start_simulator,
    stop,
)
from bench.herd_figures import (
    Counted,
    CountingTransport,
    count_balances,
    duplicates,
    gap_figures,
    gaps,
    held_lines,
    naive_lines,
    order_spread,
    packages,
    peak_rss_mb,
    rejected,
    rss_mb,
    switch_latencies,
    switched_by_carrier,
)
from bench.naive import NaivePlan
from bench.purchases import as_orders, package_lines
from carriers.base import Carrier
from carriers.windows import window_end_epoch
from config import Settings
from models.db import migrate, session_scope
from models.payloads import Policy, ProductSpec
from models.tables import Balance, Product
from ports import free_port
from services.catalog import sync_catalogue
from services.enrolment import EnrolRequest, enrol, product_spec, workflow_id
from temporal_client import exit_with
from worker import build_worker, workflow_runner

CARRIERS = ("telna", "webbing", "esimgo")
# Carriers selling passes that end at a reset boundary (the herd proper); eSIM Go's
# bundles roll from their start (CARRIERS.md 4.3), so its lines end as they started.
BOUNDARY_CARRIERS = ("telna", "webbing")
# Pass of each compressed day length, by catalogue id, at each carrier.
PRODUCTS = {
    period: {
        "telna": f"telna-compressed-{period}s-utc",
        "webbing": webbing,
        # A bundle of the same length, rolling from its start.
        "esimgo": f"esimgo-esim_{period // 10}MB_{period}S_SIM",
    }
    for period, webbing in (
        (30, "webbing-9130"),
        (120, "webbing-9120"),
        (600, "webbing-9160"),
        (1800, "webbing-9180"),
        (3600, "webbing-9190"),
    )
}
# The same passes on a UTC+8 day: the naive baseline's boundary, a third of a day before
# the product's, so the two designs do not share the box's cores at their midnights.
NAIVE_PRODUCTS = {
    30: {"telna": "telna-compressed-30s-utc8", "webbing": "webbing-9230"},
    120: {"telna": "telna-compressed-120s-utc8", "webbing": "webbing-9220"},
    600: {"telna": "telna-compressed-600s-utc8", "webbing": "webbing-9260"},
    1800: {"telna": "telna-compressed-1800s-utc8", "webbing": "webbing-9280"},
    3600: {"telna": "telna-compressed-3600s-utc8", "webbing": "webbing-9290"},
}
NAIVE_OFFSET_MINUTES = 480
# Enrolments per second assumed when choosing the boundary (a first line each: order,
# activation polls, records), unless --bring-up-rate says otherwise; measured 5-10/s on
# the 2-core box (BENCHMARKS.md, first_lines_seconds).
ENROL_RATE = 6.0
# Most balances bringing up at once, by default (and at most 3/4 of the worker's cache):
# 1,500 made 6-7 first lines a second on the 2-core box, 9,100 made 0.2.
BRING_UP_WINDOW = 1500
SAMPLE = 6
# eSIM Go's limit (per client IP, a second; the simulator's default), and about what a
# first line costs there in tokens: the order (2), reading back its assignment (1) and
# the confirmations of its start (1 each).
ESIMGO_TOKENS = 10
ESIMGO_TOKENS_PER_LINE = 6
# The sample's pass: 120 s, or the herd's day if shorter. On the 30 s pass an order has
# 4 s before its Failing deadline, which a loaded box overran during the 10,000 bring-up
# (a Failing mark and its recovery: 27 events instead of 25, BENCHMARKS.md attempt 9);
# 120 s leaves it 18 s, still a compressed day.
SAMPLE_PERIOD = 120
# Starting and ending the bare loop's workflows, beside its measured window: the bare
# loop runs first, delaying the bring-up, when the boundary leaves this much to spare.
BARE_SETUP_SECONDS = 60
# Terms: the herd's two lines meet at B. The sample rotates three times: a run hands over
# when its next order falls due, so its third run (order, switch, the next order's timer)
# is the first whole one after the bring-up's.
HERD_LINES, SAMPLE_LINES = 2, 4
SAMPLE_POLICY = Policy()


def esimgo_spread(balances: int) -> float:
    """Seconds eSIM Go's share of a herd of ``balances`` takes to bring up under its rate
    limit: each first line's tokens (:data:`ESIMGO_TOKENS_PER_LINE`) at
    :data:`ESIMGO_TOKENS` a second. Its bundles roll from their start, so their ends, and
    the next orders ``lead`` before them, come spread over as long again after B: the
    orders keep to the limit because the bring-up had to."""
    share = math.ceil(balances / len(CARRIERS))
    return share * ESIMGO_TOKENS_PER_LINE / ESIMGO_TOKENS


def esimgo_in_doubt(period: int) -> float:
    """How long eSIM Go's client holds an order in doubt on this compressed day: a quarter
    of the lead window, at most the product's 60 s, and never less than the client's
    timeout and 2 s (an order whose answer the client gave up on may still be committed
    until then). eSIM Go answers 503 while it processes a request it has taken, so a 503
    to an order (the run injects ``--error-rate`` of them, before anything is taken)
    leaves it in doubt, and nothing is bought again before the hold is over. 60 s fits a
    real day's lead of 1,800 s; on a 120 s day (lead 30 s) it let a line end before its
    next was bought: a gap of 39 s in a 300 herd (BENCHMARKS.md). Scaled down as the
    carriers' latencies are, as far as that is safe."""
    settings = Settings()
    floor = settings.carrier_timeout_seconds + 2
    quarter = Policy().lead(period) / 4
    return min(settings.esimgo.in_doubt_seconds, max(quarter, floor))


def choose_period(enrolments: int, rate: float, balances: int = 0) -> int:
    """The shortest compressed day in which this many enrolments fit before the lead, and
    eSIM Go's share of ``balances`` (spread over :func:`esimgo_spread`, at its limit)
    both before the lead and, its lines ending as long after B, within the herd's
    deadline."""
    esimgo = esimgo_spread(balances)
    for period in sorted(PRODUCTS):
        bring_up = max(enrolments / rate, esimgo)
        if bring_up + period / 4 + 5 < period * 0.9 and esimgo + 5 < period * 0.9:
            return period
    return max(PRODUCTS)


def next_boundary(period: int, need_seconds: float) -> float:
    """The first multiple of ``period`` (epoch seconds) at least ``need_seconds`` away."""
    now = time.time()
    return math.ceil((now + need_seconds) / period) * period


async def wait_until(epoch: float) -> None:
    while (left := epoch - time.time()) > 0:
        await asyncio.sleep(min(left, 1.0))


async def poll(what: str, done: Callable[[], bool], deadline: float) -> float:
    """Waits until ``done()``; returns the time it held. Raises past ``deadline``."""
    while not done():
        if time.time() > deadline:
            raise TimeoutError(f"{what}: not done by the deadline")
        await asyncio.sleep(0.25)
    return time.time()


# --- the run -------------------------------------------------------------------------


@dataclass
class Run:
    args: argparse.Namespace
    tmp: Path
    client: Client
    settings: Settings
    http: httpx.AsyncClient
    sims: dict[str, str]  # the product's carrier account
    carriers: dict[str, Carrier]  # its clients, counting their requests
    counted: Counted
    baseline: dict[str, str]  # the naive baseline's own carrier account
    executor: ThreadPoolExecutor
    result: dict[str, Any] = field(default_factory=dict)
    bare_rates: dict[str, float] = field(default_factory=dict)  # by when it ran

    def carrier_of(self, index: int) -> str:
        return CARRIERS[index % len(CARRIERS)]

    def naive_carrier_of(self, index: int) -> str:
        return BOUNDARY_CARRIERS[index % len(BOUNDARY_CARRIERS)]

    async def bare(self, when: str) -> None:
        """Phase 1: the engine's own rotation rate with nothing of ours in it."""
        queue = f"{self.settings.task_queue}-bare"
        count = min(self.args.balances, 500)
        warmup, window = 3.0, float(self.args.bare_seconds)
        # A safety stop only: starting hundreds of runs takes a while; all are ended below.
        until = datetime.now(UTC) + timedelta(seconds=warmup + window + 300)
        async with Worker(
            self.client,
            task_queue=queue,
            workflows=[BareWorkflow],
            activities=[noop],
            # The product's worker settings, so the ratio compares like with like.
            max_concurrent_activities=self.settings.worker_max_concurrent_activities,
            max_concurrent_workflow_tasks=self.settings.worker_max_concurrent_workflow_tasks,
            max_cached_workflows=self.settings.worker_max_cached_workflows,
            workflow_runner=workflow_runner(self.settings),
        ):
            handles = [
                await self.client.start_workflow(
                    BareWorkflow.run, BareInput(until=until), id=f"bare-{i}", task_queue=queue
                )
                for i in range(count)
            ]
            await asyncio.sleep(warmup)
            before = await self._bare_rotations(handles)
            began = time.monotonic()
            await asyncio.sleep(window)
            after = await self._bare_rotations(handles)
            elapsed = time.monotonic() - began
            for i in range(count):  # the latest run of each, not the first
                with suppress(RPCError):
                    await self.client.get_workflow_handle(f"bare-{i}").terminate()
        self.bare_rates[when] = round((after - before) / elapsed, 1)

    async def _bare_rotations(self, handles: Sequence[Any]) -> int:
        """Rotations so far: the number of finished (continued-as-new) runs."""
        query = (
            f"TaskQueue = '{self.settings.task_queue}-bare' AND ExecutionStatus = 'ContinuedAsNew'"
        )
        return (await self.client.count_workflows(query)).count

    async def herd(self) -> None:
        """Phase 2: the product's balances meet one boundary."""
        n, period, url = self.args.balances, self.args.period, self.settings.database_url
        lead = Policy().lead(period)
        sample_period = min(SAMPLE_PERIOD, period)
        iccids = bench_iccids(n + SAMPLE)
        herd, sample = iccids[:n], iccids[n:]
        baseline = bench_iccids(self.args.baseline_balances)
        await self._add_esims(self.sims, iccids, self.carrier_of)
        await self._add_esims(self.baseline, baseline, self.naive_carrier_of)
        enrolments = n + len(baseline)
        # The naive baseline's day starts a third of a day before the product's.
        early = period / 3 if baseline else 0.0
        need = early + enrolments / self.args.bring_up_rate + lead + 5
        boundary = next_boundary(period, need)
        naive_boundary = window_end_epoch(
            boundary - period, period, "local_midnight", NAIVE_OFFSET_MINUTES
        )
        first_start = boundary - period - early
        spare = boundary - time.time() - need  # how long the bring-up may wait
        bare = self.args.bare_seconds
        if first_start - time.time() > bare + 8 or spare > bare + BARE_SETUP_SECONDS:
            await self.bare("before_herd")  # on a box with nothing else on it
        await wait_until(first_start + 0.5)
        naive = asyncio.create_task(self.naive(baseline, naive_boundary))
        await wait_until(boundary - period + 0.5)
        rss_before = rss_mb()
        async with build_worker(self.client, self.settings, self.carriers, self.executor):
            began = time.time()
            jobs = [
                self._enrol_job(iccid, i, PRODUCTS[period], HERD_LINES)
                for i, iccid in enumerate(herd)
            ]
            await self._enrol_paced(jobs, url)
            enrolled = time.time()
            sample_enrolled = asyncio.create_task(
                self._enrol_sample(
                    [
                        self._enrol_job(iccid, i, PRODUCTS[sample_period], SAMPLE_LINES)
                        for i, iccid in enumerate(sample)
                    ],
                    sample_period,
                )
            )
            # The herd is what is timed: a side-sample balance whose short lines a loaded
            # box activated only as they ended never rotates, and must not hold it up.
            in_herd = col(Balance.lines_total) == HERD_LINES
            in_sample = col(Balance.lines_total) == SAMPLE_LINES
            # Every first line up (or the herd is late: measured anyway).
            with suppress(TimeoutError):
                up = await poll(
                    "first lines active",
                    lambda: count_balances(url, col(Balance.line_seq) == 1) >= n,
                    boundary - 1,
                )
                # Bring-up: every first line ordered, activated and recorded.
                self.result["first_lines_seconds"] = round(up - began, 1)
            self.result["first_lines_active_before_boundary"] = count_balances(
                url, col(Balance.line_seq) == 1
            )
            if time.time() > boundary - lead:
                left = boundary - time.time()
                print(f"enrolment ran into the lead window ({left:.0f} s left)", file=sys.stderr)
            self.counted.clear()
            rejected_before = await rejected(self.http, self.sims)
            rss_open = rss_mb()
            share = Counter(self.carrier_of(i) for i in range(n))
            switched_at = await switched_by_carrier(url, in_herd, share, boundary + period * 0.9)
            if len(switched_at) < len(share):
                print("the herd did not switch within 0.9 period", file=sys.stderr)
            last_at = time.time()
            # The boundary's herd: the carriers whose passes all end at B.
            done_at = max(switched_at.get(c, last_at) for c in share if c in BOUNDARY_CARRIERS)
            # The worker's high-water mark is read now, before this process reads the
            # herd's packages and histories for the figures below.
            peak = peak_rss_mb()
            calls, calls_by_carrier = self.counted.total(), dict(self.counted.calls)
            answered_429 = {c: self.counted.rejected.get(c, 0) for c in self.sims}
            rejected_after = await rejected(self.http, self.sims)
            found = await packages(self.http, self.sims)
            switched = held_lines(url)  # read after the packages: each one's seq
            boundary_products = [PRODUCTS[period][c] for c in BOUNDARY_CARRIERS]
            confirm = switch_latencies(url, boundary, boundary_products)
            await sample_enrolled
            # A sample balance slowed by a loaded box may rotate less: measured anyway.
            with suppress(TimeoutError):
                await poll(
                    "sample's rotations",
                    lambda: (
                        count_balances(url, in_sample, col(Balance.rotations) >= SAMPLE_LINES - 1)
                        >= SAMPLE
                    ),
                    time.time() + SAMPLE_LINES * sample_period,
                )
            await naive  # met its own boundary before this one, in its own process
            events = await history_events_per_rotation(
                self.client, sample, last_run_after=2, dump=self.args.dump_history
            )
            retries = await activity_retries(self.client, {workflow_id(i) for i in herd})
            # Read once every package in ``found`` has had its line recorded.
            held = held_lines(url)
        seqs = {
            package: line.seq for package, line in package_lines(as_orders(found), switched).items()
        }
        herd_gaps = gaps(found, seqs, set(herd), last_at)
        boundary_herd = sum(share[c] for c in BOUNDARY_CARRIERS)
        seconds = max(done_at - boundary, 0.001)
        sample_share = Counter(self.carrier_of(i) for i in range(len(sample)))
        by_carrier: dict[str, dict[str, Any]] = {}
        for carrier, count in sorted(share.items()):
            mine = {i for k, i in enumerate(herd) if self.carrier_of(k) == carrier}
            rotated = col(Balance.rotations) >= 1
            by_carrier[carrier] = {
                "balances": count,
                "rotations": count_balances(url, in_herd, rotated, col(Balance.carrier) == carrier),
                **gap_figures(gaps(found, seqs, mine, last_at)),
                "switch_seconds_after_boundary": round(
                    switched_at.get(carrier, last_at) - boundary, 2
                ),
                **order_spread(found, seqs, mine),
                "carrier_calls_per_rotation": round(
                    calls_by_carrier.get(carrier, 0) / (count + sample_share[carrier]), 2
                ),
                "carrier_429s_answered": answered_429[carrier],
                "duplicate_orders": duplicates(found, held, mine),
            }
        self.result.update(
            {
                "balances": n,
                "period_seconds": period,
                "lead_seconds": lead,
                "boundary": datetime.fromtimestamp(boundary, UTC).isoformat(),
                "enrol_seconds": round(enrolled - began, 1),
                "rotations": count_balances(url, in_herd, col(Balance.rotations) >= 1),
                **gap_figures(herd_gaps),
                "duplicate_orders": duplicates(found, held, set(iccids)),
                "switch_seconds_after_boundary": round(done_at - boundary, 2),
                **confirm,
                "rotations_per_second": round(boundary_herd / seconds, 1),
                "carrier_calls_per_rotation": round(calls / (n + SAMPLE), 2),
                "carrier_calls": calls_by_carrier,  # the same window as the figure above
                "rate_limit_per_second": self.args.rate_limit,
                "carrier_429s": {c: rejected_after[c] - rejected_before[c] for c in rejected_after},
                "carrier_429s_answered": answered_429,
                "by_carrier": by_carrier,
                "history_events_per_rotation": round(events, 1),
                "activity_retries": retries,
                "worker_peak_rss_mb": round(peak, 1),
                "worker_kb_per_balance": round((rss_open - rss_before) * 1024 / n, 1),
                "worker_peak_kb_per_balance": round((peak - rss_before) * 1024 / n, 1),
            }
        )

    async def _enrol_paced(self, jobs: Sequence[Callable[[], Awaitable[Any]]], url: str) -> None:
        """Enrol in batches of 100, keeping at most ``--bring-up-window`` balances without
        a first line. Too many at once and the bring-up crawls: a worker caching fewer
        workflows than are bringing up rebuilds each one (a fresh sandbox and a replay)
        at every step, and even with all of them cached the dev server drowns in their
        activation polls (BENCHMARKS.md, 10,000 balances)."""
        window = self.args.bring_up_window
        if window <= 0:
            cache = self.settings.worker_max_cached_workflows
            window = max(100, min(BRING_UP_WINDOW, cache * 3 // 4))
        started, step = 0, min(100, window)
        for first in range(0, len(jobs), step):
            while started - count_balances(url, col(Balance.line_seq) >= 1) >= window:
                await asyncio.sleep(0.5)
            batch = jobs[first : first + step]
            await gather_limited(batch, 50)
            started += len(batch)

    async def _enrol_sample(
        self, jobs: Sequence[Callable[[], Awaitable[Any]]], period: int
    ) -> None:
        """Enrol the sample just after one of its own boundaries, so that each first line
        has a whole pass. Enrolled at the tail of the herd's bring-up, a first line could
        end a minute later; its activation, slow on the loaded box, came after that, and
        the balance brought up line 2 instead of switching to it: one rotation, not two,
        and the wait for the second ran out (BENCHMARKS.md: the 1,000 herd under a
        profiler)."""
        await wait_until(next_boundary(period, 0) + 1)
        await gather_limited(jobs, 50)

    def _enrol_job(
        self, iccid: str, index: int, products: dict[str, str], lines: int
    ) -> Callable[[], Awaitable[Any]]:
        carrier = self.carrier_of(index)
        req = EnrolRequest(iccid=iccid, carrier=carrier, product_id=products[carrier], lines=lines)

        async def job() -> None:
            await enrol(
                self.client, self.settings.database_url, self.settings.task_queue, req, "bench"
            )

        return job

    async def _add_esims(
        self, sims: dict[str, str], iccids: Sequence[str], carrier_of: Callable[[int], str]
    ) -> None:
        for carrier in sims:
            mine = [i for k, i in enumerate(iccids) if carrier_of(k) == carrier]
            for start in range(0, len(mine), 1000):
                answer = await self.http.post(
                    f"{sims[carrier]}/_sim/esims", json={"iccids": mine[start : start + 1000]}
                )
                answer.raise_for_status()

    async def naive(self, iccids: Sequence[str], boundary: float) -> None:
        """A midnight herd met by expire-then-provision: ``bench/naive.py``, in a process
        of its own, on the same pass at UTC+8, whose ``boundary`` is a third of a day
        before the product's (so neither design's herd shares the cores with the other)."""
        n, period = len(iccids), self.args.period
        if n <= 0:
            return
        deadline = boundary + period * 0.9
        plan = NaivePlan(
            temporal_address=self.client.service_client.config.target_host,
            namespace=self.client.namespace,
            task_queue=f"{self.settings.task_queue}-naive",
            sims=self.baseline,
            rate_limit=self.args.rate_limit,
            specs=self._specs(NAIVE_PRODUCTS[period]),
            esims=[(iccid, self.naive_carrier_of(i)) for i, iccid in enumerate(iccids)],
            deadline=deadline,
            max_concurrent_activities=self.settings.worker_max_concurrent_activities,
        )
        path = self.tmp / "naive-plan.json"
        path.write_text(plan.model_dump_json())
        with (self.tmp / "naive.log").open("wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.naive", str(path), stdout=log, stderr=log
            )
            try:
                await asyncio.wait_for(proc.wait(), deadline - time.time() + 60)
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        if proc.returncode != 0:
            tail = (self.tmp / "naive.log").read_text()[-2000:]
            raise RuntimeError(f"the naive baseline failed ({proc.returncode}): {tail}")
        done_at = min(time.time(), deadline)
        found = await packages(self.http, self.baseline)
        lines = naive_lines(found, set(iccids))
        seqs = {line.carrier_line_id: line.seq for line in lines}
        figures = gap_figures(gaps(found, seqs, set(iccids), done_at))
        self.result["naive"] = {
            "balances": n,
            "boundary": datetime.fromtimestamp(boundary, UTC).isoformat(),
            **figures,
            "duplicate_orders": duplicates(found, lines, set(iccids)),
        }

    def _specs(self, products: dict[str, str]) -> dict[str, ProductSpec]:
        specs = {}
        with session_scope(self.settings.database_url) as session:
            for carrier, product_id in products.items():
                product = session.get(Product, product_id)
                assert product is not None, f"{product_id} is not in the catalogue"
                specs[carrier] = product_spec(product)
        return specs


async def start_simulators(
    args: argparse.Namespace,
    tmp: Path,
    name: str,
    stack: AsyncExitStack,
    carriers: Sequence[str] = CARRIERS,
) -> dict[str, str]:
    """The simulators of one carrier account, their rate limit and error faults set.
    eSIM Go's rate limit is its own (tokens per client IP each second, 10 by default),
    not ``--rate-limit``."""
    ports = {carrier: free_port() for carrier in carriers}
    seed = ["--seed", str(args.seed)]
    extra = {"webbing": ["--usage-lag", "2"]}
    for carrier in carriers:
        log = tmp / f"{name}-{carrier}.log"
        proc = start_simulator(carrier, ports[carrier], log, [*seed, *extra.get(carrier, [])])
        stack.callback(stop, proc)
    sims = {c: f"http://127.0.0.1:{p}" for c, p in ports.items()}
    async with httpx.AsyncClient(timeout=30) as http:
        for carrier, url in sims.items():
            faults: dict[str, float] = {"error_rate": args.error_rate}
            if carrier != "esimgo":
                faults["rate_limit_per_second"] = args.rate_limit
            (await http.post(f"{url}/_sim/faults", json=faults)).raise_for_status()
    return sims


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        open_workflows = args.balances + args.baseline_balances + SAMPLE
        env = await stack.enter_async_context(await dev_server(history_cache_args(open_workflows)))
        settings = bench_settings(tmp, {})
        # The product and the naive baseline each have their own carrier accounts (and
        # rate limits): one design's traffic must not slow the other's down.
        sims = await start_simulators(args, tmp, "product", stack)
        naive = await start_simulators(args, tmp, "naive", stack, BOUNDARY_CARRIERS)
        counted = Counted()
        carriers = carrier_clients(
            sims,
            args.rate_limit,
            lambda carrier: CountingTransport(carrier, counted),
            esimgo_in_doubt_seconds=esimgo_in_doubt(args.period),
        )
        for carrier in carriers.values():
            stack.push_async_callback(carrier.aclose)
        settings.telna.base_url = sims["telna"]
        settings.webbing.base_url = sims["webbing"]
        settings.telna.rate_limit_per_second = args.rate_limit
        settings.webbing.rate_limit_per_second = args.rate_limit
        settings.esimgo.base_url = sims["esimgo"] + ESIMGO_VERSION
        migrate(settings.database_url)
        await sync_catalogue(carriers, settings.database_url)
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=30))
        executor = stack.enter_context(ThreadPoolExecutor(settings.worker_activity_threads))
        run = Run(args, tmp, env.client, settings, http, sims, carriers, counted, naive, executor)
        started = time.monotonic()
        esimgo = (await http.get(f"{sims['esimgo']}/_sim/esimgo")).json()
        run.result["esimgo_rate_limit_tokens_per_second"] = esimgo["rate_limit_tokens"]
        run.result["esimgo_spread_seconds_at_limit"] = round(esimgo_spread(args.balances), 1)
        run.result["esimgo_in_doubt_seconds"] = esimgo_in_doubt(args.period)
        await run.herd()
        await run.bare("after_herd")  # the herd's balances still open on the server
        run.result["bench_seconds"] = round(time.monotonic() - started, 1)
    result = run.result
    result["bare_rotations_per_second_runs"] = run.bare_rates
    bare = result["bare_rotations_per_second"] = max(run.bare_rates.values())
    result["efficiency"] = round(result["rotations_per_second"] / bare, 2) if bare else None
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--balances", type=int, default=1000)
    parser.add_argument("--json", type=Path, help="also write the result here")
    parser.add_argument("--period", type=int, choices=sorted(PRODUCTS), help="compressed day (s)")
    parser.add_argument("--baseline-balances", type=int, help="naive baseline size (default N)")
    parser.add_argument("--rate-limit", type=float, default=50.0, help="per carrier, requests/s")
    parser.add_argument("--error-rate", type=float, default=0.005, help="carrier 503 rate")
    parser.add_argument("--bare-seconds", type=float, default=10.0)
    parser.add_argument(
        "--bring-up-rate", type=float, default=ENROL_RATE, help="enrolments/s, for the boundary"
    )
    parser.add_argument(
        "--bring-up-window",
        type=int,
        default=0,
        help=f"most balances bringing up at once (default {BRING_UP_WINDOW}, "
        "at most 3/4 of the worker's cache)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--dump-history", type=Path, help="event list of one rotation's run")
    args = parser.parse_args(argv)
    logging.getLogger("temporalio").setLevel(logging.ERROR)  # retried carrier errors
    if args.balances < 1:
        parser.error("--balances must be at least 1")
    if args.bring_up_window < 0:
        parser.error("--bring-up-window must be 0 (the default) or more")
    if args.bring_up_rate <= 0:
        parser.error("--bring-up-rate must be positive")
    if args.baseline_balances is None:
        args.baseline_balances = args.balances
    enrolments = args.balances + args.baseline_balances
    args.period = args.period or choose_period(enrolments, args.bring_up_rate, args.balances)
    try:
        with tempfile.TemporaryDirectory(prefix="herd-") as tmp:
            result = asyncio.run(until_stopped(measure(args, Path(tmp))))
    except KeyboardInterrupt:
        result = None
    if result is None:
        print("herd: stopped before its figures were taken", file=sys.stderr)
        return 130
    return report(result, args.json)


async def until_stopped(run: Awaitable[dict[str, Any]]) -> dict[str, Any] | None:
    """``run``'s result, or None once SIGTERM has cancelled it, which stops the worker,
    the dev server and the simulators it started on its way out. The loop's own handler,
    not a Python one raising SIGINT: a process started with SIGINT ignored (as in the
    background of a shell) would not stop."""
    main = asyncio.current_task()
    assert main is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        return await run
    except asyncio.CancelledError:
        return None


if __name__ == "__main__":
    exit_with(main)
