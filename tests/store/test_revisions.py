"""A store write never goes back: rows keep the newest workflow revision written to them.

A worker that stalls mid-write loses its workflow task; another worker replays the
workflow and writes newer state; the stalled one then wakes and its write lands late.
"""

from __future__ import annotations

from sqlmodel import select
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from models.db import migrate, session_scope
from models.payloads import BalanceStatus, LineState, RecordChanges
from models.tables import Balance, BalanceLine, Product
from services.enrolment import EnrolRequest, register
from tests.store.builders import PRODUCT, changes, event, line, new_balance


def _record(url: str, *batches: RecordChanges) -> None:
    store = StoreActivities(url)
    for batch in batches:
        ActivityEnvironment().run(store.record_changes, batch)


def _rows(url: str, balance_id: str) -> tuple[Balance, dict[int, BalanceLine]]:
    with session_scope(url) as session:
        balance = session.get(Balance, balance_id)
        lines = session.exec(select(BalanceLine).where(BalanceLine.balance_id == balance_id))
        by_seq = {row.seq: row for row in lines}
        assert balance is not None
        session.expunge_all()
    return balance, by_seq


def _before_and_after_a_switch(balance_id: str, iccid: str) -> tuple[RecordChanges, ...]:
    """Revision 2: line 1 active, line 2 ordered; revision 3: switched to line 2."""
    ordered = changes(
        balance_id,
        iccid,
        [line(balance_id, 2), line(balance_id, 1, LineState.active)],  # the balance's: 1
        [event(balance_id, 2, "ordered")],
        revision=2,
    )
    switched = changes(
        balance_id,
        iccid,
        [line(balance_id, 1, LineState.expired), line(balance_id, 2, LineState.active)],
        [event(balance_id, 2, "activated"), event(balance_id, 1, "expired")],
        rotations=1,
        revision=3,
    )
    return ordered, switched


def _assert_switched(url: str, balance_id: str) -> None:
    balance, lines = _rows(url, balance_id)
    assert (balance.line_seq, balance.rotations, balance.revision) == (2, 1, 3)
    assert balance.line_ends_at == lines[2].ends_at
    assert (lines[1].state, lines[2].state) == ("expired", "active")
    assert (lines[1].revision, lines[2].revision) == (3, 3)


def test_an_older_write_after_a_newer_one_changes_nothing(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    ordered, switched = _before_and_after_a_switch(balance_id, iccid)
    _record(database_url, ordered, switched, ordered)
    _assert_switched(database_url, balance_id)


def test_the_same_write_twice_is_harmless(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    ordered, switched = _before_and_after_a_switch(balance_id, iccid)
    _record(database_url, ordered, switched, switched)
    _assert_switched(database_url, balance_id)


def test_a_newer_write_lands(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    ordered, switched = _before_and_after_a_switch(balance_id, iccid)
    _record(database_url, ordered)
    balance, lines = _rows(database_url, balance_id)
    assert (balance.line_seq, balance.revision, lines[2].state) == (1, 2, "scheduled")
    _record(database_url, switched)
    _assert_switched(database_url, balance_id)


def test_an_older_write_does_not_reopen_a_closed_balance(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    ordered, _ = _before_and_after_a_switch(balance_id, iccid)
    cancelled = changes(
        balance_id,
        iccid,
        [line(balance_id, 1, LineState.cancelled)],
        [],
        status=BalanceStatus.Cancelled,
        revision=3,
    )
    _record(database_url, ordered, cancelled, ordered)
    balance, lines = _rows(database_url, balance_id)
    assert (balance.state, balance.open_iccid, balance.revision) == ("Cancelled", None, 3)
    assert (lines[1].state, lines[2].state) == ("cancelled", "scheduled")


def test_the_audits_line_write_lands_and_keeps_the_rows_revision(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    ordered, switched = _before_and_after_a_switch(balance_id, iccid)
    _record(database_url, ordered)
    # The carrier says line 2 has ended: the audit writes it down, with no balance record.
    ended = line(balance_id, 2).model_copy(update={"state": LineState.failed})
    _record(
        database_url,
        RecordChanges(balance_id=balance_id, iccid=iccid, carrier="telna", lines=[ended]),
    )
    _, lines = _rows(database_url, balance_id)
    assert (lines[2].state, lines[2].revision) == ("failed", 2)
    stale = changes(balance_id, iccid, [line(balance_id, 2)], [], revision=1)
    _record(database_url, stale)
    assert _rows(database_url, balance_id)[1][2].state == "failed"
    _record(database_url, switched)
    _assert_switched(database_url, balance_id)


def test_a_balance_enrolled_again_continues_past_its_rows_revision(database_url: str) -> None:
    """Its workflow terminated by hand, the balance is enrolled again: the new workflow's
    writes land, and a write of the gone one still in flight on a stalled worker does not."""
    migrate(database_url)
    with session_scope(database_url) as session:
        session.add(
            Product(
                id=PRODUCT,
                carrier="telna",
                carrier_product_id="compressed-60s",
                name="60 s",
                allowance_bytes=10**9,
                validity_seconds=60,
                throttle_kbps=128,
                price_cents=100,
            )
        )
    _, iccid = new_balance()
    req = EnrolRequest(iccid=iccid, carrier="telna", product_id=PRODUCT)
    state, created = register(database_url, req, "test")
    balance_id = state.balance_id
    assert created
    gone = [line(balance_id, 1, LineState.active)]
    _record(database_url, changes(balance_id, iccid, gone, [], revision=5))
    state, created = register(database_url, req, "test")
    assert not created and state.revision == 6
    state.revision += 1  # as the new workflow's first write does
    switched = [line(balance_id, 1, LineState.expired), line(balance_id, 2, LineState.active)]
    _record(database_url, changes(balance_id, iccid, switched, [], revision=state.revision))
    in_flight = [line(balance_id, 1, LineState.active), line(balance_id, 2)]
    _record(database_url, changes(balance_id, iccid, in_flight, [], revision=6))
    balance, lines = _rows(database_url, balance_id)
    assert (balance.revision, lines[1].state, lines[2].state) == (7, "expired", "active")
