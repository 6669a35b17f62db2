"""Reads as the ledger grows: the same fleet on its second day and after months of it.

Two SQLite ledgers of ``--balances`` balances on daily passes are built with bulk
inserts, one of about ``--rows`` rows (lines and events) per ``--rows`` given, the
smallest first: the same balances, the same phases in the day, only the history is
longer. Each line has the events a rotation writes (ordered, activated, the usage
thresholds, expired); a sixth of the lines are used up before their end, a tenth of the
balances were paused for an hour once, a twentieth were cancelled two hours ago.

Through the real app (``httpx.ASGITransport``, no network), each read is called
``--calls`` times on every ledger in turn, so that a busy machine slows them alike:
``GET /v1/continuity``, ``GET /v1/balances/{id}`` of a balance with the longest history,
the dashboard's fleet page and that balance's eSIM page (with the carrier's lines as a
worker answered them, kept: here none, the ledgers being written straight into the
database; a worker's read costs the same at any ledger size). The figures are the median
milliseconds per ledger and, per read, the ratio of the largest
ledger's median to the smallest's.

    python -m bench.reads --json FILE
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlalchemy import insert
from sqlmodel import SQLModel

from api.app import create_app
from api.dashboard.esim import CarrierView
from bench.common import bench_settings, report
from config import Settings
from models.db import get_engine, migrate, session_scope
from models.identifiers import make_iccid
from models.tables import Balance, BalanceLine, Esim, LineEvent, Product
from temporal_client import exit_with

DAY = timedelta(days=1)
SWITCH_OVERLAP = timedelta(seconds=30)
OPERATOR_KEY = "bench-operator-key-0000"
PRODUCTS = {"telna": "telna-daily-1gb", "webbing": "webbing-1042"}
# Rows a balance adds per day: its line, ordered, activated, 50 and 80 %, expired, and
# 95 and 100 % on one line in six.
ROWS_PER_LINE = 6 + 2 / 6
READS = ("continuity", "balance", "fleet_page", "esim_page")
TARGET_RATIO = 1.5


@dataclass
class Ledger:
    """What one database holds, as built."""

    url: str
    days: int
    balance_id: str = ""
    iccid: str = ""
    lines: int = 0
    events: int = 0
    balances: int = 0
    medians_ms: dict[str, float] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.lines + self.events


def build(url: str, balances: int, days: int, now: datetime) -> Ledger:
    """``balances`` balances with ``days`` daily lines each, the last one serving now."""
    migrate(url)
    ledger = Ledger(url, days, balances=balances)
    tables: dict[type[SQLModel], list[dict[str, Any]]] = {
        Esim: [],
        Balance: [],
        BalanceLine: [],
        LineEvent: [],
    }
    for n in range(balances):
        for table, values in _balance_rows(n, balances, days, now).items():
            tables[table] += values
    with session_scope(url) as session:
        session.add(Product(**_product("telna", "daily-1gb")))
        session.add(Product(**_product("webbing", "1042")))
        for table, values in tables.items():
            session.execute(insert(table), values)
    ledger.lines, ledger.events = len(tables[BalanceLine]), len(tables[LineEvent])
    first = tables[Balance][0]
    ledger.balance_id, ledger.iccid = first["id"], first["iccid"]
    return ledger


def _balance_rows(
    n: int, balances: int, days: int, now: datetime
) -> dict[type[SQLModel], list[dict[str, Any]]]:
    """The rows of balance ``n``: its lines start at its own phase of the day."""
    carrier = "webbing" if n % 4 == 3 else "telna"
    bid, iccid = f"bal_{n:012x}", make_iccid(f"89440000{n:010d}")
    phase = DAY * n / balances
    first = now - phase - DAY * (days - 1)
    cancelled = n % 20 == 19
    closed_at = now - phase / 2 if cancelled else None
    balance = {
        "id": bid,
        "iccid": iccid,
        "open_iccid": None if cancelled else iccid,
        "carrier": carrier,
        "product_id": PRODUCTS[carrier],
        "policy": {},
        "state": "Cancelled" if cancelled else "Active",
        "workflow_id": f"balance-{iccid}",
        "line_seq": days,
        "line_ends_at": first + DAY * days,
        "rotations": days - 1,
        "paused": False,
        "capped": False,
        "created_at": first - timedelta(minutes=30),
        "updated_at": now,
        "closed_at": closed_at,
    }
    lines: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []

    def event(kind: str, at: datetime, seq: int | None, **detail: Any) -> None:
        if at <= (closed_at or now):
            key = f"{bid}:{len(events)}"
            events.append(
                {
                    "key": key,
                    "balance_id": bid,
                    "seq": seq,
                    "kind": kind,
                    "actor": "workflow",
                    "at": at,
                    "detail": detail,
                }
            )

    for seq in range(1, days + 1):
        start = first + DAY * (seq - 1)
        last = seq == days
        ended_at = closed_at if last else start + DAY + SWITCH_OVERLAP
        used_up = seq % 6 == 0
        lines.append(
            {
                "balance_id": bid,
                "seq": seq,
                "iccid": iccid,
                "carrier": carrier,
                "carrier_line_id": f"pkg-{bid}-{seq}",
                "reference": f"{bid}:{seq}",
                "product_id": PRODUCTS[carrier],
                "state": ("cancelled" if cancelled else "active") if last else "expired",
                "allowance_bytes": 10**9,
                "used_bytes": 10**9 if used_up else 8 * 10**8,
                "ordered_at": start - timedelta(minutes=20),
                "activated_at": start,
                "ends_at": start + DAY,
                "ended_at": ended_at,
                "exhausted_at": start + timedelta(hours=20) if used_up else None,
                "updated_at": now,
            }
        )
        event("ordered", start - timedelta(minutes=20), seq)
        event(
            "activated",
            start + timedelta(seconds=2),
            seq,
            **({"reason": "time"} if seq > 1 else {}),
        )
        for percent, hours in ((50, 10), (80, 16), *(((95, 19), (100, 20)) if used_up else ())):
            event("usage_threshold", start + timedelta(hours=hours), seq, percent=percent)
        if n % 10 == 9 and seq == max(1, days - 1):
            event("paused", start + timedelta(hours=3), None, reason="bench")
            event("resumed", start + timedelta(hours=4), None, reason="bench")
        if ended_at is not None:
            event("cancelled" if last else "expired", ended_at, seq)
    if closed_at is not None:
        event("cancel_requested", closed_at - timedelta(seconds=1), None, reason="bench")
    esim = {"iccid": iccid, "carrier": carrier, "created_at": balance["created_at"]}
    return {Esim: [esim], Balance: [balance], BalanceLine: lines, LineEvent: events}


def _product(carrier: str, pid: str) -> dict[str, Any]:
    return {
        "id": f"{carrier}-{pid}",
        "carrier": carrier,
        "carrier_product_id": pid,
        "name": pid,
        "allowance_bytes": 10**9,
        "validity_seconds": 86_400,
        "throttle_kbps": 128,
        "price_cents": 100,
    }


class KeptCarrierLines:
    """The carrier's lines of an eSIM page, as kept from a worker's last read."""

    async def view(self, client: object, carrier: str, iccid: str) -> CarrierView:
        return CarrierView()


async def _client(settings: Settings) -> httpx.AsyncClient:
    """A signed-in client of the app (operator key: API and dashboard)."""
    app = create_app(settings)
    app.state.carrier_lines = KeptCarrierLines()
    app.state.client = None  # no lifespan under ASGITransport; the kept lines need none
    http = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://bench",
        headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        timeout=60,
    )
    signed = await http.post("/dashboard/signin", data={"api_key": OPERATOR_KEY})
    if signed.status_code != 303:
        raise RuntimeError(f"dashboard sign-in: {signed.status_code} {signed.text[:200]}")
    return http


def _paths(ledger: Ledger) -> dict[str, str]:
    return {
        "continuity": "/v1/continuity",
        "balance": f"/v1/balances/{ledger.balance_id}",
        "fleet_page": "/",
        "esim_page": f"/dashboard/esims/{ledger.iccid}",
    }


async def measure(settings: Settings, ledgers: list[Ledger], calls: int) -> None:
    """Every read ``calls`` times on each ledger in turn (after one call to warm up)."""
    clients = [
        await _client(settings.model_copy(update={"database_url": ledger.url}))
        for ledger in ledgers
    ]
    seconds: dict[tuple[int, str], list[float]] = {}
    try:
        for round_ in range(calls + 1):
            for read in READS:
                for i, (ledger, http) in enumerate(zip(ledgers, clients, strict=True)):
                    began = time.perf_counter()
                    answer = await http.get(_paths(ledger)[read])
                    took = time.perf_counter() - began
                    if answer.status_code != 200:
                        raise RuntimeError(f"{read}: {answer.status_code} {answer.text[:300]}")
                    if round_:
                        seconds.setdefault((i, read), []).append(took)
    finally:
        for http in clients:
            await http.aclose()
    for i, ledger in enumerate(ledgers):
        ledger.medians_ms = {
            read: round(statistics.median(seconds[(i, read)]) * 1000, 2) for read in READS
        }


def run(tmp: Path, balances: int, rows: Sequence[int], calls: int) -> dict[str, Any]:
    settings = bench_settings(tmp, {}).model_copy(
        update={"api_keys": SecretStr(f"operator:{OPERATOR_KEY}")}
    )
    now = datetime.now(UTC)
    ledgers = []
    for target in sorted(rows):
        days = max(2, round(target / (balances * ROWS_PER_LINE)))
        url = f"sqlite:///{tmp / f'reads-{target}.db'}"
        ledgers.append(build(url, balances, days, now))
    asyncio.run(measure(settings, ledgers, calls))
    for ledger in ledgers:
        get_engine(ledger.url).dispose()
    small, large = ledgers[0], ledgers[-1]
    return {
        "balances": balances,
        "calls": calls,
        "ledgers": [
            {
                "rows": ledger.rows,
                "lines": ledger.lines,
                "events": ledger.events,
                "days": ledger.days,
                "median_ms": ledger.medians_ms,
            }
            for ledger in ledgers
        ],
        "ratio": {
            read: round(large.medians_ms[read] / small.medians_ms[read], 2) for read in READS
        },
        "target_ratio": TARGET_RATIO,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--balances", type=int, default=100)
    parser.add_argument(
        "--rows", type=int, action="append", help="repeatable (default 1000, 100000)"
    )
    parser.add_argument("--calls", type=int, default=30, help="timed calls per read and ledger")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    rows = args.rows or [1000, 100_000]
    if args.balances < 1 or args.calls < 1 or len(rows) < 2 or min(rows) < 1:
        parser.error("--balances and --calls must be at least 1; give --rows twice or none")
    with tempfile.TemporaryDirectory(prefix="reads-") as tmp:
        return report(run(Path(tmp), args.balances, rows, args.calls), args.json)


if __name__ == "__main__":
    exit_with(main)
