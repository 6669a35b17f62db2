"""Rotation writes per second: ``record_changes`` as a boundary switch calls it.

Each write is the one a rotation makes at the boundary: the balance row, the ended and
the new line, and their two ledger events, in one transaction. ``--balances`` balances
are enrolled (one write each, not timed), then each is switched once, timed, from
``--threads`` threads as the worker's activity pool runs them. On a fresh SQLite file by
default, or the empty database at ``--database-url``.

    python -m bench.store_write --balances 2000 --threads 1 --threads 8 --json FILE
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from bench.common import report
from models.db import get_engine, migrate
from models.identifiers import make_iccid
from models.payloads import (
    BalanceRecord,
    BalanceStatus,
    EventRecord,
    Line,
    LineState,
    RecordChanges,
)
from temporal_client import exit_with

PRODUCT = "telna-daily-1gb"
DAY = timedelta(days=1)


def _line(balance_id: str, seq: int, state: LineState, start: datetime) -> Line:
    return Line(
        seq=seq,
        reference=f"{balance_id}:{seq}",
        product_id=PRODUCT,
        carrier_product_id="daily-1gb",
        allowance_bytes=10**9,
        validity_seconds=86_400,
        state=state,
        line_id=f"pkg-{balance_id}-{seq}",
        ordered_at=start - timedelta(minutes=20),
        activated_at=start,
        ends_at=start + DAY,
        ended_at=start + DAY if state is LineState.expired else None,
    )


def _write(balance_id: str, iccid: str, lines: list[Line], rotations: int) -> RecordChanges:
    now = datetime.now(UTC)
    events = [
        EventRecord(
            key=f"{balance_id}:{uuid.uuid4().hex}",
            balance_id=balance_id,
            seq=line.seq,
            kind=line.state.value,
            actor="workflow",
            at=now,
            detail={"line_id": line.line_id, "reference": line.reference, "reason": "time"},
        )
        for line in lines
    ]
    active = lines[-1]
    return RecordChanges(
        balance_id=balance_id,
        iccid=iccid,
        carrier="telna",
        balance=BalanceRecord(
            balance_id=balance_id,
            status=BalanceStatus.Active,
            product_id=PRODUCT,
            line_seq=active.seq,
            line_ends_at=active.ends_at,
            rotations=rotations,
        ),
        lines=lines,
        events=events,
    )


def _run(store: StoreActivities, changes: RecordChanges) -> None:
    ActivityEnvironment().run(store.record_changes, changes)


def measure(url: str, balances: int, threads: Sequence[int]) -> dict[str, object]:
    migrate(url)
    store = StoreActivities(url)
    midnight = datetime(2030, 1, 2, tzinfo=UTC)
    result: dict[str, object] = {"balances": balances, "database": url.split(":")[0]}
    for count in threads:
        ids = [(f"bal_{uuid.uuid4().hex[:12]}", uuid.uuid4().int % 10**14) for _ in range(balances)]
        enrolled = [
            (bid, make_iccid(f"8944{n:014d}"), _line(bid, 1, LineState.active, midnight - DAY))
            for bid, n in ids
        ]
        for bid, iccid, first in enrolled:
            _run(store, _write(bid, iccid, [first], 0))
        switches = [
            _write(
                bid,
                iccid,
                [
                    first.model_copy(update={"state": LineState.expired, "ended_at": midnight}),
                    _line(bid, 2, LineState.active, midnight),
                ],
                1,
            )
            for bid, iccid, first in enrolled
        ]
        began = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            for done in [pool.submit(_run, store, s) for s in switches]:
                done.result()
        seconds = time.perf_counter() - began
        result[f"writes_per_second_{count}_threads"] = round(balances / seconds, 1)
    get_engine(url).dispose()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--balances", type=int, default=2000)
    parser.add_argument("--threads", type=int, action="append", help="repeatable (default 1, 8)")
    parser.add_argument("--database-url", help="an empty database (default: a fresh SQLite file)")
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    if args.balances < 1:
        parser.error("--balances must be at least 1")
    threads = args.threads or [1, 8]
    if min(threads) < 1:
        parser.error("--threads must be at least 1")
    if args.database_url:
        return report(measure(args.database_url, args.balances, threads), args.json)
    with tempfile.TemporaryDirectory(prefix="store-write-") as tmp:
        url = f"sqlite:///{tmp}/bench.db"
        return report(measure(url, args.balances, threads), args.json)


if __name__ == "__main__":
    exit_with(main)
