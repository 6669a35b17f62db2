"""``record_changes`` on SQLite and PostgreSQL: idempotent upserts of lines and events."""

from __future__ import annotations

from datetime import UTC

from sqlmodel import col, func, select
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from models.db import migrate, session_scope
from models.payloads import BalanceStatus, LineState
from models.tables import Balance, BalanceLine, Esim, LineEvent
from tests.store.builders import changes, event, line, new_balance


def _record(url: str, *batches: object) -> None:
    store = StoreActivities(url)
    for batch in batches:
        ActivityEnvironment().run(store.record_changes, batch)


def _counts(url: str, balance_id: str) -> tuple[int, int]:
    with session_scope(url) as session:
        lines = session.exec(
            select(func.count()).where(col(BalanceLine.balance_id) == balance_id)
        ).one()
        events = session.exec(
            select(func.count()).where(col(LineEvent.balance_id) == balance_id)
        ).one()
    return lines, events


def test_a_workflow_started_elsewhere_gets_its_esim_and_balance_rows(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    _record(
        database_url, changes(balance_id, iccid, [line(balance_id, 1)], [event(balance_id, 1, "o")])
    )
    with session_scope(database_url) as session:
        esim = session.get(Esim, iccid)
        balance = session.get(Balance, balance_id)
        assert esim is not None and esim.carrier == "telna"
        assert balance is not None and balance.open_iccid == iccid and balance.line_seq == 1
    assert _counts(database_url, balance_id) == (1, 1)


def test_writing_the_same_changes_again_changes_nothing(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    batch = changes(
        balance_id,
        iccid,
        [line(balance_id, 1, LineState.active), line(balance_id, 2)],
        [event(balance_id, 1, "activated"), event(balance_id, 2, "ordered")],
    )
    _record(database_url, batch, batch, batch)
    assert _counts(database_url, balance_id) == (2, 2)


def test_a_later_step_updates_its_lines_and_appends_only_new_events(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    first = changes(balance_id, iccid, [line(balance_id, 1)], [event(balance_id, 1, "ordered")])
    active = line(balance_id, 1, LineState.active).model_copy(update={"used_bytes": 5 * 10**9})
    second = changes(
        balance_id,
        iccid,
        [active],
        [event(balance_id, 1, "ordered"), event(balance_id, 1, "activated")],
        rotations=1,
    )
    _record(database_url, first, second)
    with session_scope(database_url) as session:
        row = session.exec(select(BalanceLine).where(BalanceLine.balance_id == balance_id)).one()
        balance = session.get(Balance, balance_id)
    assert row.state == "active" and row.used_bytes == 5 * 10**9
    assert row.reference == f"{balance_id}:1"
    assert row.activated_at is not None and row.activated_at.tzinfo == UTC
    assert row.activated_at == active.activated_at
    assert balance is not None and balance.rotations == 1
    assert _counts(database_url, balance_id) == (1, 2)


def test_closing_frees_the_esim_and_keeps_the_first_closing_time(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    closed = changes(balance_id, iccid, [line(balance_id, 1)], [], status=BalanceStatus.Cancelled)
    _record(database_url, changes(balance_id, iccid, [line(balance_id, 1)], []), closed)
    with session_scope(database_url) as session:
        balance = session.get(Balance, balance_id)
        assert balance is not None
        first_closed_at = balance.closed_at
    assert balance.state == "Cancelled" and balance.open_iccid is None
    assert first_closed_at is not None and first_closed_at.tzinfo == UTC
    _record(database_url, closed)
    with session_scope(database_url) as session:
        again = session.get(Balance, balance_id)
    assert again is not None and again.closed_at == first_closed_at
