"""A retried ``record_changes`` racing its own first attempt leaves one row per line.

Two threads, each on its own database connection, are released by a barrier at the same
moment with the same step's changes — as when Temporal retries an activity whose first
attempt (on another worker) is still running. Repeated many times, on a balance the
database does not know yet (so the eSIM and balance rows race too) and on a known one.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import col, func, select
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from models.db import migrate, session_scope
from models.payloads import LineState, RecordChanges
from models.tables import Balance, BalanceLine, Esim, LineEvent
from tests.store.builders import changes, event, line, new_balance

ROUNDS = 60
RACERS = 2


def _race(store: StoreActivities, batch: RecordChanges) -> None:
    barrier = threading.Barrier(RACERS)

    def attempt() -> None:
        barrier.wait(timeout=10)
        ActivityEnvironment().run(store.record_changes, batch)

    with ThreadPoolExecutor(RACERS) as pool:
        for future in [pool.submit(attempt) for _ in range(RACERS)]:
            future.result(timeout=30)


def _duplicates(url: str) -> tuple[list[object], list[object]]:
    with session_scope(url) as session:
        lines = session.exec(
            select(BalanceLine.balance_id, BalanceLine.seq)
            .group_by(col(BalanceLine.balance_id), col(BalanceLine.seq))
            .having(func.count() > 1)
        ).all()
        events = session.exec(
            select(LineEvent.key).group_by(col(LineEvent.key)).having(func.count() > 1)
        ).all()
    return list(lines), list(events)


def test_racing_attempts_never_write_a_line_or_an_event_twice(database_url: str) -> None:
    migrate(database_url)
    store = StoreActivities(database_url)
    balances = []
    for _ in range(ROUNDS):
        balance_id, iccid = new_balance()
        balances.append(balance_id)
        # Unknown balance: the eSIM row, the balance row, line 1 and its event all race.
        _race(
            store,
            changes(balance_id, iccid, [line(balance_id, 1)], [event(balance_id, 1, "ordered")]),
        )
        # Known balance: line 1 is updated and line 2 inserted by both at once.
        step = changes(
            balance_id,
            iccid,
            [line(balance_id, 1, LineState.active), line(balance_id, 2)],
            [event(balance_id, 1, "activated"), event(balance_id, 2, "ordered")],
        )
        _race(store, step)
    assert _duplicates(database_url) == ([], [])
    with session_scope(database_url) as session:
        assert session.exec(select(func.count()).select_from(Esim)).one() == ROUNDS
        assert session.exec(select(func.count()).select_from(Balance)).one() == ROUNDS
        assert session.exec(select(func.count()).select_from(BalanceLine)).one() == 2 * ROUNDS
        assert session.exec(select(func.count()).select_from(LineEvent)).one() == 3 * ROUNDS
        states = session.exec(
            select(BalanceLine.state).where(col(BalanceLine.seq) == 1).distinct()
        ).all()
    assert states == ["active"]
