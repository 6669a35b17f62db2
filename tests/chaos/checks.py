"""The invariants of DESIGN section 8, judged from the carriers' own records and the database.

Nothing here asks the product for its figures: purchases, activations and ends come from
the simulators' ledgers (``GET /_sim/ledger``), coverage from their timelines
(``GET /_sim/timeline/{iccid}``), and the product's side from its database rows. Each
check returns one readable line per violation; an empty list means the invariant held.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.purchases import made_twice, package_lines

ENDS = {"deactivate", "expire", "cancel"}
ENDED_STATES = {"expired", "exhausted", "cancelled", "failed"}
# Carrier times are whole milliseconds: a boundary may be off by one.
TICK = 0.002


def _t(value: str) -> datetime:
    return datetime.fromisoformat(value)


@dataclass(frozen=True)
class DbLine:
    """A ``balance_line`` row, as far as the checks need it."""

    balance_id: str
    iccid: str
    seq: int
    reference: str
    carrier_line_id: str | None
    state: str
    activated_at: datetime | None
    # Its product is replaced in place (DESIGN section 5): bought only when it takes effect.
    in_place: bool = False


@dataclass(frozen=True)
class DbEvent:
    """A ``line_event`` row: the product's ledger."""

    key: str
    balance_id: str
    seq: int | None
    kind: str
    reason: str | None = None


def duplicate_orders(
    entries: Iterable[Mapping[str, Any]], lines: Iterable[DbLine], iccids: set[str]
) -> list[str]:
    """Invariant 1: at most one purchase per (balance, seq). Every order on our eSIMs is
    the package of a line of ours, and no line's package was bought twice; two orders
    with one reference, where the carrier kept it, are reported too. The rules, and
    what a line the audit recorded afterwards counts for: ``bench.purchases``."""
    return made_twice(entries, lines, iccids)


def active_spans(
    entries: Iterable[Mapping[str, Any]], until: datetime
) -> dict[str, list[tuple[datetime, datetime, str]]]:
    """Per ICCID, when each package was active at the carrier (start, end, package id)."""
    started: dict[str, tuple[str, datetime]] = {}
    ended: dict[str, datetime] = {}
    for e in entries:
        if e["action"] == "activate":
            started.setdefault(e["package_id"], (e["iccid"], _t(e["at"])))
        elif e["action"] in ENDS or e["action"] == "exhaust":
            # A used-up pass serves no more at high speed: a queued next one may start.
            ended.setdefault(e["package_id"], _t(e["at"]))
    spans: dict[str, list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for package, (iccid, start) in started.items():
        spans[iccid].append((start, ended.get(package, until), package))
    return spans


def overlaps(
    spans: Mapping[str, Sequence[tuple[datetime, datetime, str]]], allowed_seconds: float
) -> tuple[list[str], float]:
    """Invariant 2: at most one active line per eSIM, except during a switch (an overlap of
    two lines no longer than ``allowed_seconds``). Also the longest overlap seen."""
    problems, longest = [], 0.0
    for iccid, lines in spans.items():
        moments = sorted(
            [(start, 1) for start, _, _ in lines] + [(end, -1) for _, end, _ in lines],
            key=lambda m: (m[0], m[1]),
        )
        active, since = 0, None
        for at, step in moments:
            if active >= 2 and step == -1 and since is not None:
                seconds = (at - since).total_seconds()
                longest = max(longest, seconds)
                if seconds > allowed_seconds + TICK:
                    problems.append(f"{iccid}: two lines active for {seconds:.1f}s from {since}")
            active += step
            if active >= 2 and step == 1:
                since = at
                if active > 2:
                    problems.append(f"{iccid}: {active} lines active at once at {at}")
    return problems, longest


def _span(interval: Mapping[str, Any], open_until: datetime) -> tuple[datetime, datetime]:
    """A timeline interval's start and end, the open last one (and any later) cut at
    ``open_until``."""
    end = _t(interval["end"]) if interval["end"] else open_until
    return _t(interval["start"]), min(end, open_until)


def coverage(
    intervals: Sequence[Mapping[str, Any]], open_until: datetime
) -> tuple[float, float, float]:
    """(gap, throttled, high-speed) seconds of one eSIM's timeline from its first
    activation until ``open_until``; gaps within a boundary's rounding are not counted."""
    gap = throttled = high = 0.0
    for interval in intervals:
        start, end = _span(interval, open_until)
        seconds = max(0.0, (end - start).total_seconds())
        if interval["state"] == "none" and seconds > TICK:
            gap += seconds
        elif interval["state"] == "throttled":
            throttled += seconds
        elif interval["state"] == "high_speed":
            high += seconds
    return gap, throttled, high


def outside(
    intervals: Sequence[Mapping[str, Any]],
    state: str,
    windows: Sequence[tuple[datetime, datetime]],
    open_until: datetime,
) -> float:
    """Seconds of one eSIM's timeline in ``state`` outside every one of ``windows`` (the
    times a fault excuses, none overlapping another), up to ``open_until``."""
    seconds = 0.0
    for interval in intervals:
        if interval["state"] != state:
            continue
        start, end = _span(interval, open_until)
        seconds += max(0.0, (end - start).total_seconds())
        for w_start, w_end in windows:
            seconds -= max(0.0, (min(end, w_end) - max(start, w_start)).total_seconds())
    return max(0.0, seconds)


def agreement(
    entries: Sequence[Mapping[str, Any]], lines: Sequence[DbLine], iccids: set[str]
) -> list[str]:
    """Invariant 3: every purchase at the carrier is a line in the database holding it
    (``bench.purchases.package_lines``: by package id, or in place by the moment it took
    effect) with the same reference where the carrier kept it, and the reverse; a line
    ended at the carrier is ended in the database, and a line still active at the carrier
    is active in the database."""
    problems = []
    ours = [e for e in entries if e["iccid"] in iccids]
    orders = {e["package_id"]: e for e in ours if e["action"] == "order"}
    holding = package_lines(orders.values(), lines)
    for package, order in orders.items():
        line = holding.get(package)
        if line is None:
            problems.append(f"{order['iccid']}: package {package} bought but not in the database")
        elif order["reference"] is not None and line.reference != order["reference"]:
            problems.append(f"{package}: reference {order['reference']} vs {line.reference}")
    held = {(line.balance_id, line.seq): package for package, line in holding.items()}
    for line in lines:
        # In place, a change is a purchase once in effect: one withdrawn before (the
        # device suspended meanwhile) was never bought, and the carrier shows nothing.
        never_bought = line.in_place and line.activated_at is None
        if line.carrier_line_id and (line.balance_id, line.seq) not in held and not never_bought:
            problems.append(
                f"{line.iccid}: line {line.seq} ({line.carrier_line_id}) unknown to the carrier"
            )
    # A used-up pass has ended where passes stack (a queued carrier shows it depleted until
    # its window ends); in place, the one product stays, throttled, until replaced.
    ended = {
        e["package_id"]
        for e in ours
        if e["action"] in ENDS
        or (
            e["action"] == "exhaust"
            and e["package_id"] in holding
            and not holding[e["package_id"]].in_place
        )
    }
    activated = {e["package_id"] for e in ours if e["action"] == "activate"}
    for package, line in holding.items():
        if package in ended and line.state not in ENDED_STATES:
            problems.append(
                f"{line.iccid}: line {line.seq} ended at the carrier, {line.state} here"
            )
        if package in activated and package not in ended and line.state != "active":
            problems.append(
                f"{line.iccid}: line {line.seq} active at the carrier, {line.state} here"
            )
        if line.state == "active" and package not in activated - ended:
            problems.append(f"{line.iccid}: line {line.seq} active here, not at the carrier")
    return problems


def missing_ledger_events(
    entries: Sequence[Mapping[str, Any]], lines: Sequence[DbLine], events: Sequence[DbEvent]
) -> list[str]:
    """No ledger event is missing: each carrier action on a line of ours has its event in
    the product's ledger, and each balance's workflow events are numbered 1..n without a
    hole (their keys are ``{balance_id}:{n}``)."""
    problems = []
    by_package = package_lines(entries, lines)
    kinds: dict[tuple[str, int], set[str]] = defaultdict(set)
    for event in events:
        if event.seq is not None:
            kinds[(event.balance_id, event.seq)].add(event.kind)
    # A line's end is the workflow's event, or the audit's that ended or recorded it.
    ended = {"expired", "cancelled", "exhausted", "activation_failed", "order_failed"}
    wanted = {"order": {"ordered"}, "activate": {"activated"}} | dict.fromkeys(ENDS, ended)
    for e in entries:
        line = by_package.get(e["package_id"])
        need = wanted.get(e["action"])
        if line is None or need is None:
            continue  # not ours (agreement() reports it), or not an action of ours
        seen = kinds[(line.balance_id, line.seq)]
        if e["action"] in ENDS and any(kind.startswith("audit_") for kind in seen):
            continue
        if not seen & need:
            kind = "/".join(sorted(need))
            problems.append(f"{line.iccid}: no {kind} event for {e['action']} of line {line.seq}")
    numbers: dict[str, list[int]] = defaultdict(list)
    for event in events:
        match = re.fullmatch(re.escape(event.balance_id) + r":(\d+)", event.key)
        if match:
            numbers[event.balance_id].append(int(match.group(1)))
    for balance_id, seen_numbers in numbers.items():
        holes = sorted(set(range(1, max(seen_numbers) + 1)) - set(seen_numbers))
        if holes:
            problems.append(f"balance {balance_id}: ledger events {holes[:5]} missing")
    return problems


@dataclass(frozen=True)
class Run:
    """One workflow run as Temporal lists it (its status by name: ``COMPLETED``, ...)."""

    workflow_id: str
    run_id: str
    workflow_type: str
    status: str


IMPROPER = {"FAILED", "TIMED_OUT", "CANCELED"}


def improper_runs(runs: Iterable[Run], terminated: set[tuple[str, str]]) -> list[str]:
    """Every run completed, continued as new, or still runs (the schedules' pollers): none
    failed, timed out or was cancelled, and none was terminated but the runs in
    ``terminated`` (workflow id, run id), which the soak terminated on purpose, each of
    them found terminated. A balance's workflow runs no more once it was cancelled."""
    problems, seen = [], set()
    for run in runs:
        key = (run.workflow_id, run.run_id)
        if run.status == "TERMINATED" and key in terminated:
            seen.add(key)
        elif run.status in IMPROPER | {"TERMINATED"}:
            problems.append(f"workflow {run.workflow_id} run {run.run_id}: {run.status}")
        if run.workflow_type == "BalanceWorkflow" and run.status == "RUNNING":
            problems.append(f"workflow {run.workflow_id} still running after its cancel")
    for workflow_id, run_id in sorted(terminated - seen):
        problems.append(f"workflow {workflow_id} run {run_id}: terminated, not listed so")
    return problems


# A run enrolled again continues with a ``restored`` event; one the audit found gone
# first was restarted by it instead (its finding ``audit_missing_workflow``).
CONTINUED = {"restored", "audit_missing_workflow"}


def not_continued(events: Iterable[DbEvent], balance_ids: Iterable[str]) -> list[str]:
    """Each balance terminated and enrolled again went on from its history: its ledger
    says it was restored (or restarted by the audit)."""
    kinds: dict[str, set[str]] = defaultdict(set)
    for event in events:
        kinds[event.balance_id].add(event.kind)
    return [
        f"balance {balance_id}: enrolled again, but no restored event"
        for balance_id in balance_ids
        if not kinds[balance_id] & CONTINUED
    ]


# A worker log record starts with its time (``%(asctime)s``, the host's local time).
_RECORD = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ", re.MULTILINE)
_FAILED = "Completing activity as failed"
_ACTIVITY = re.compile(r"'activity_type': '(\w+)'")


@dataclass(frozen=True)
class Timeout:
    """An activity attempt that failed because the carrier client gave up waiting."""

    at: datetime  # local time, as the worker logged it
    activity: str  # order_line, activate_line, ...


def client_timeouts(worker_log: str) -> list[Timeout]:
    """The worker's activity attempts that failed on the carrier client's timeout
    (``CarrierOutcomeUnknown`` for a write, ``CarrierUnavailable`` for a read: the error
    the attempt failed with names httpx's ``ReadTimeout``). An ``order_line`` among them
    is an order unanswered, so held in doubt until the carrier shows it."""
    found = []
    starts = list(_RECORD.finditer(worker_log))
    for i, start in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(worker_log)
        record = worker_log[start.start() : end]
        head, _, trace = record.partition("\n")
        activity = _ACTIVITY.search(head)
        if _FAILED not in head or activity is None:
            continue
        failure = [line for line in trace.splitlines() if "ApplicationError: " in line]
        if failure and "Timeout(" in failure[-1]:
            at = datetime.strptime(start.group(1), "%Y-%m-%d %H:%M:%S,%f")
            found.append(Timeout(at, activity.group(1)))
    return found
