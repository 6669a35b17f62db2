"""What the midnight herd reads to give its figures: carrier calls counted on the way out,
the worker's memory, the database's confirmation times and lines, and the carriers' own
records (``/_sim/packages``, ``/_sim/faults``) for gaps, duplicate purchases and 429s."""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import col, func, select

from bench.purchases import HeldLine, as_orders, made_twice
from models.db import session_scope
from models.tables import Balance, BalanceLine


@dataclass
class Counted:
    """HTTP requests the carrier clients sent, and the 429s answered to them, per carrier."""

    calls: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    rejected: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def total(self) -> int:
        return sum(self.calls.values())

    def clear(self) -> None:
        self.calls.clear()
        self.rejected.clear()


class CountingTransport(httpx.AsyncBaseTransport):
    def __init__(self, carrier: str, counted: Counted) -> None:
        self._inner = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=50))
        self._carrier, self._counted = carrier, counted

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self._counted.calls[self._carrier] += 1
        response = await self._inner.handle_async_request(request)
        if response.status_code == 429:
            self._counted.rejected[self._carrier] += 1
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def rss_mb() -> float:
    """This process's resident memory now (the worker runs in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def switch_latencies(url: str, boundary: float, products: list[str]) -> dict[str, float]:
    """Seconds from the boundary until each balance had confirmed line 2 and written it
    to the database (the line row's last write): how long the midnight work took."""
    with session_scope(url) as session:
        query = select(BalanceLine.updated_at).where(
            BalanceLine.seq == 2,
            col(BalanceLine.activated_at).is_not(None),
            col(BalanceLine.product_id).in_(products),
        )
        late = sorted(at.timestamp() - boundary for at in session.exec(query).all())
    if not late:
        return {}
    return {
        "confirm_seconds_p50": round(late[len(late) // 2], 2),
        "confirm_seconds_p99": round(late[max(0, math.ceil(len(late) * 0.99) - 1)], 2),
        "confirm_seconds_max": round(late[-1], 2),
    }


def count_balances(url: str, *where: Any) -> int:
    with session_scope(url) as session:
        return int(session.exec(select(func.count()).select_from(Balance).where(*where)).one())


def rotated_by_carrier(url: str, *where: Any) -> dict[str, int]:
    """Balances matching ``where`` that have rotated at least once, per carrier."""
    with session_scope(url) as session:
        query = (
            select(Balance.carrier, func.count())
            .where(col(Balance.rotations) >= 1, *where)
            .group_by(col(Balance.carrier))
        )
        return {carrier: int(count) for carrier, count in session.exec(query).all()}


async def switched_by_carrier(
    url: str, in_herd: Any, share: dict[str, int], deadline: float
) -> dict[str, float]:
    """When every herd balance of each carrier had rotated (``share``: how many each has),
    waiting until all had or ``deadline``; a carrier not done by then is left out."""
    done: dict[str, float] = {}
    while len(done) < len(share) and time.time() <= deadline:
        rotated = rotated_by_carrier(url, in_herd)
        now = time.time()
        for carrier, count in share.items():
            if carrier not in done and rotated.get(carrier, 0) >= count:
                done[carrier] = now
        if len(done) < len(share):
            await asyncio.sleep(0.25)
    return done


# --- carrier records -----------------------------------------------------------------


async def packages(http: httpx.AsyncClient, sims: dict[str, str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for url in sims.values():
        answer = await http.get(f"{url}/_sim/packages", timeout=120)
        answer.raise_for_status()
        found.extend(answer.json()["packages"])
    return found


def _t(text: str | None) -> float | None:
    return datetime.fromisoformat(text).timestamp() if text else None


def held_lines(url: str) -> list[BalanceLine]:
    """Every line the database holds (the herd's database holds only its own)."""
    with session_scope(url) as session:
        return list(session.exec(select(BalanceLine)).all())


def gaps(
    found: list[dict[str, Any]], seqs: dict[str, int], iccids: set[str], until: float
) -> list[float]:
    """Per eSIM, seconds between line 1's end and line 2's activation (0 if they met or
    overlapped; up to ``until`` if line 2 never came). ``seqs``: each package's seq."""
    by_seq: dict[tuple[str, int], dict[str, Any]] = {}
    for package in found:
        seq = seqs.get(package["id"])
        if package["iccid"] in iccids and seq is not None:
            by_seq[(package["iccid"], seq)] = package
    result = []
    for iccid in iccids:
        first, second = by_seq.get((iccid, 1)), by_seq.get((iccid, 2))
        if first is None:
            continue
        ended = _t(first["terminated_at"]) or _t(first["expires_at"]) or until
        started = _t(second["activated_at"]) if second else None
        result.append(max(0.0, min(started or until, until) - ended))
    return result


def duplicates(found: list[dict[str, Any]], lines: Sequence[HeldLine], iccids: set[str]) -> int:
    """Purchases made twice: packages on these eSIMs that no line of ``lines`` holds, and
    references bought more than once where the carrier kept them (``bench.purchases``).
    Read the packages once the balances have ordered their last line, the lines after."""
    return len(made_twice(as_orders(found), lines, iccids))


@dataclass(frozen=True)
class Naive:
    """A line of a naive baseline balance, known by when it was bought: that design keeps
    no database, and buys line 2 only once line 1 has ended."""

    balance_id: str
    iccid: str
    seq: int
    carrier_line_id: str
    activated_at: None = None  # known by its package id, never by when it started


def naive_lines(found: list[dict[str, Any]], iccids: set[str]) -> list[Naive]:
    """Per eSIM, its first package is line 1 and the first one bought once line 1 had
    ended is line 2; any other package on it was bought twice."""
    by_iccid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for package in found:
        if package["iccid"] in iccids:
            by_iccid[package["iccid"]].append(package)
    lines = []
    for iccid, bought in by_iccid.items():
        first, *rest = sorted(bought, key=lambda p: str(p["ordered_at"]))
        lines.append(Naive(f"naive-{iccid}", iccid, 1, first["id"]))
        # Its window's end, or its end before that (a pass replaced in place keeps
        # serving, throttled, past its window until the next one takes effect).
        ended = min((t for t in (first["terminated_at"], first["expires_at"]) if t), default=None)
        after = [p for p in rest if ended and str(p["ordered_at"]) >= ended]
        if after:
            lines.append(Naive(f"naive-{iccid}", iccid, 2, after[0]["id"]))
    return lines


def order_spread(
    found: list[dict[str, Any]], seqs: dict[str, int], iccids: set[str]
) -> dict[str, float | int]:
    """How the carrier met these eSIMs' line-2 orders: over how many seconds they came
    (first to last), and the most that came within one second (whole epoch seconds, the
    window eSIM Go's rate limit counts in)."""
    times = sorted(
        t
        for p in found
        if p["iccid"] in iccids and seqs.get(p["id"]) == 2 and (t := _t(p["ordered_at"]))
    )
    if not times:
        return {"line2_orders_seconds": 0.0, "line2_orders_peak_per_second": 0}
    per_second = Counter(math.floor(t) for t in times)
    return {
        "line2_orders_seconds": round(times[-1] - times[0], 1),
        "line2_orders_peak_per_second": max(per_second.values()),
    }


def gap_figures(values: list[float]) -> dict[str, float]:
    ordered = sorted(values) or [0.0]
    p99 = ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]
    return {
        "gap_seconds_max": round(ordered[-1], 3),
        "gap_seconds_p99": round(p99, 3),
        "throttled_seconds_total": round(sum(ordered), 3),
        "balances_with_gap": sum(1 for v in ordered if v > 0),
    }


async def rejected(http: httpx.AsyncClient, sims: dict[str, str]) -> dict[str, int]:
    """429s each simulator answered so far (its rate limit fault)."""
    counts = {}
    for carrier, url in sims.items():
        report = (await http.get(f"{url}/_sim/faults")).json()
        counts[carrier] = int(report["injected"]["rate_limit"])
    return counts
