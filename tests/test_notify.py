"""Outbound notifications: signature, backoff, the leased cursor over the ledger, drops."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import col, select

from models import outbox
from models.db import migrate, session_scope
from models.outbox import Cursor, Notification, notification_type
from models.signature import SignatureError, verify
from models.tables import Balance, Esim, LineEvent, NotificationCursor
from services.audit_rules import Kind
from services.metrics import notifications
from services.notify import Dispatcher, backoff, signed
from tests.receiver import Received, Receiver
from tests.store.builders import new_balance

SECRET = "notify-test-secret"


def _note(**update: object) -> Notification:
    note = Notification(
        id="bal_x:3",
        type="line.activated",
        balance_id="bal_x",
        iccid="89440000000000000019",
        seq=2,
        at=datetime(2030, 1, 1, tzinfo=UTC),
        detail={"reason": "time"},
    )
    return note.model_copy(update=update)


def _ledger(url: str, *kinds: tuple[str, int | None]) -> tuple[str, list[int]]:
    """A balance with one ledger event per (kind, seq); returns its id and the event ids."""
    migrate(url)
    balance_id, iccid = new_balance()
    ids: list[int] = []
    with session_scope(url) as session:
        if session.get(Balance, balance_id) is None:
            session.add(Esim(iccid=iccid, carrier="telna"))
            session.flush()
            session.add(
                Balance(id=balance_id, iccid=iccid, carrier="telna", product_id="p",
                        workflow_id=f"balance-{iccid}")
            )  # fmt: skip
            session.flush()
        for n, (kind, seq) in enumerate(kinds):
            event = LineEvent(
                key=f"{balance_id}:{n}",
                balance_id=balance_id,
                seq=seq,
                kind=kind,
                actor="workflow",
                at=datetime.now(UTC),
                detail={"n": n},
            )
            session.add(event)
            session.flush()
            assert event.id is not None
            ids.append(event.id)
    return balance_id, ids


def _position(url: str) -> int:
    with session_scope(url) as session:
        row = session.get(NotificationCursor, outbox.CURSOR)
        assert row is not None
        return row.last_event_id


def test_a_delivery_verifies_with_the_shared_scheme_and_only_unchanged() -> None:
    now = time.time()
    body, headers = signed(SECRET, _note(), now)
    assert headers["Esim-Event-Id"] == "bal_x:3"
    verify(SECRET, headers["Esim-Signature"], body, now)
    assert Notification.model_validate_json(body) == _note()
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, headers["Esim-Signature"], body.replace(b"time", b"usage"), now)
    with pytest.raises(SignatureError, match="tolerance"):
        verify(SECRET, headers["Esim-Signature"], body, now + 301)


def test_backoff_doubles_from_the_base_up_to_the_cap() -> None:
    assert [backoff(n) for n in range(1, 6)] == [1, 2, 4, 8, 16]
    assert backoff(9) == 256 and backoff(10) == 300 and backoff(40) == 300
    assert [backoff(n, base=0.5, cap=3) for n in (1, 2, 3, 4)] == [0.5, 1, 2, 3]


def test_only_the_notifiable_kinds_are_notified() -> None:
    assert notification_type("activated", 2) == "line.activated"
    assert notification_type("exhausted", 2) == "line.ended"
    assert notification_type("cancelled", 2) == "line.ended"
    assert notification_type("cancelled", None) is None  # the balance's own end
    assert notification_type("failing", None) == "balance.failing"
    assert notification_type("usage_threshold", 3) == "usage.threshold"
    assert notification_type("cap_reached", 3) == "balance.cap_reached"
    assert notification_type("cap_lifted", 3) == "balance.cap_lifted"
    assert notification_type("recovered", None) == "balance.recovered"
    for finding in Kind:  # every kind of finding the audit records is notified
        assert notification_type(f"audit_{finding.value}", None) == "audit.finding"
    for kind in ("ordered", "paused", "completed", "rotate_requested"):
        assert notification_type(kind, 1) is None


def test_the_cursor_starts_at_the_ledger_end_and_reads_in_id_order(database_url: str) -> None:
    _, before = _ledger(database_url, ("activated", 1))
    with session_scope(database_url) as session:  # a cursor left by an earlier test
        session.execute(NotificationCursor.__table__.delete())  # type: ignore[attr-defined]
    cursor = Cursor(database_url, "a", lease_seconds=30)
    start = cursor.claim()
    assert start is not None and start >= before[-1]
    kinds = [
        ("ordered", 1),
        ("activated", 1),
        ("cancelled", None),
        ("expired", 1),
        ("failing", None),
    ]
    balance_id, ids = _ledger(database_url, *kinds)
    batch = cursor.read(start, limit=100)
    assert [event_id for event_id, _ in batch.notes] == [ids[1], ids[3], ids[4]]
    assert [n.type for _, n in batch.notes] == ["line.activated", "line.ended", "balance.failing"]
    assert batch.notes[1][1].detail == {"n": 3, "state": "expired"}
    assert {n.balance_id for _, n in batch.notes} == {balance_id}
    assert all(n.iccid for _, n in batch.notes)
    assert batch.scanned_to == ids[-1]
    small = cursor.read(start, limit=2)  # two notifiable kinds read: it stops there
    assert [event_id for event_id, _ in small.notes] == [ids[1]]
    assert small.scanned_to == ids[2]  # the balance's own cancellation: read, not sent
    with session_scope(database_url) as session:
        assert outbox.pending(session) == 3
    assert cursor.renew(ids[3])
    with session_scope(database_url) as session:
        assert outbox.pending(session) == 1


def test_one_dispatcher_holds_the_lease_until_released_or_lapsed(database_url: str) -> None:
    _ledger(database_url)
    a, b = Cursor(database_url, "a", 30), Cursor(database_url, "b", 30)
    with session_scope(database_url) as session:  # whoever held it before lets go
        session.execute(NotificationCursor.__table__.update().values(owner=None))  # type: ignore[attr-defined]
    assert a.claim() is not None
    assert b.claim() is None
    assert not b.renew(10**9)
    assert a.renew()
    a.release()
    assert b.claim() is not None and a.claim() is None
    with session_scope(database_url) as session:  # b stalls past its lease
        lapsed = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(NotificationCursor.__table__.update().values(lease_until=lapsed))  # type: ignore[attr-defined]
    assert a.claim() is not None
    assert not b.renew(10**9), "a dispatcher that lost its lease must not move the cursor"
    b.release()  # releasing what it no longer holds changes nothing
    assert b.claim() is None


async def test_a_notification_the_receiver_keeps_refusing_is_dropped_and_the_next_goes(
    tmp_path: object,
) -> None:
    url = f"sqlite:///{tmp_path}/notify.db"
    _ledger(url)
    receiver = Receiver()
    await receiver.start()
    dispatcher = Dispatcher(url, receiver.url, SECRET, max_attempts=3, backoff_base=0.01)
    assert await dispatcher.step(httpx.AsyncClient()) is False  # creates the cursor at the end
    balance_id, ids = _ledger(url, ("activated", 1), ("ordered", 2), ("expired", 1))

    def answer(request: Received) -> int:
        return 500 if request.headers["esim-event-id"] == f"{balance_id}:0" else 204

    receiver.answer = answer
    dropped = notifications.labels("dropped")._value.get()
    async with httpx.AsyncClient() as http:
        assert await dispatcher.step(http)
    await receiver.stop()
    assert [r.json["type"] for r in receiver.attempts] == ["line.activated"] * 3 + ["line.ended"]
    assert [r.json["type"] for r in receiver.accepted] == ["line.ended"]
    assert notifications.labels("dropped")._value.get() == dropped + 1
    assert _position(url) == ids[-1]
    for request in receiver.attempts:
        verify(SECRET, request.headers["esim-signature"], request.body)


async def test_a_stopped_dispatcher_keeps_its_place_and_lets_go_of_the_lease(
    tmp_path: object,
) -> None:
    url = f"sqlite:///{tmp_path}/notify.db"
    _ledger(url)
    receiver = Receiver(status=503)
    await receiver.start()
    dispatcher = Dispatcher(
        url, receiver.url, SECRET, max_attempts=100, backoff_base=0.05, poll_seconds=0.05
    )
    async with httpx.AsyncClient() as http:
        await dispatcher.step(http)
    start = _position(url)
    _ledger(url, ("failing", None))
    stop = asyncio.Event()
    task = asyncio.create_task(dispatcher.run(stop))
    while len(receiver.attempts) < 3:
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.wait_for(task, 5)
    await receiver.stop()
    assert _position(url) == start, "an undelivered notification must be delivered later"
    with session_scope(url) as session:
        row = session.exec(
            select(NotificationCursor).where(col(NotificationCursor.name) == "webhook")
        ).one()
        assert row.owner is None
