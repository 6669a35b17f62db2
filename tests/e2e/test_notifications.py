"""Outbound notifications end to end: a receiver that is down never holds up a rotation,
and once it is back it gets every notifiable event, signed, in ledger order."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlmodel import col, select
from temporalio.testing import WorkflowEnvironment

from models.db import session_scope
from models.outbox import notification_type
from models.payloads import Policy
from models.signature import verify
from models.tables import LineEvent
from services.notify import Dispatcher
from tests.e2e.harness import iccids, none_seconds, rig
from tests.receiver import Receiver

SECRET = "receiver-test-secret"
# 10 s passes with a 5 s lead and a 3 s margin: a rotation every ~7 s.
FAST = Policy(lead_seconds=5, margin_seconds=3)


def _notifiable(database_url: str, balance_ids: set[str]) -> list[str]:
    """Keys of the notifiable ledger events of the balances, in ledger order."""
    with session_scope(database_url) as session:
        events = session.exec(
            select(LineEvent)
            .where(col(LineEvent.balance_id).in_(balance_ids))
            .order_by(col(LineEvent.id))
        ).all()
    return [e.key for e in events if notification_type(e.kind, e.seq) is not None]


async def test_a_receiver_down_during_rotations_gets_every_event_once_back(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    receiver = Receiver(status=500)
    await receiver.start()
    async with rig(dev_env, tmp_path) as r:
        url = r.settings.database_url
        dispatcher = Dispatcher(
            url, receiver.url, SECRET, 1000, poll_seconds=0.2, backoff_base=0.2, backoff_cap=1.0
        )
        async with httpx.AsyncClient() as http:
            await dispatcher.step(http)  # the cursor starts here, before the balance
        stop = asyncio.Event()
        task = asyncio.create_task(dispatcher.run(stop))
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await r.enrol(iccid, "telna-compressed-10s", policy=FAST)
        await r.wait_for(iccid, lambda s: s.rotations >= 1, 40, "a rotation, receiver failing")
        failed = len(receiver.attempts)
        await receiver.stop()  # now connections are refused
        status = await r.wait_for(
            iccid, lambda s: s.rotations >= 2, 40, "a rotation, receiver gone"
        )
        stopped_at = datetime.now(UTC)
        assert receiver.accepted == [] and failed > 0
        receiver.status = 200
        await receiver.start()
        await r.cancel_and_wait(iccid)
        expected = _notifiable(url, {status.balance_id})
        deadline = time.monotonic() + 30
        while {q.headers["esim-event-id"] for q in receiver.accepted} != set(expected):
            assert time.monotonic() < deadline, (expected, [q.json for q in receiver.accepted])
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.wait_for(task, 10)
        intervals = await r.timeline(iccid)
    await receiver.stop()
    assert none_seconds(intervals, until=stopped_at) == 0, intervals
    delivered: list[str] = []
    for request in receiver.accepted:
        verify(SECRET, request.headers["esim-signature"], request.body)
        body = request.json
        assert body["id"] == request.headers["esim-event-id"]
        assert body["iccid"] == iccid and body["balance_id"] == status.balance_id
        if body["id"] not in delivered:  # at-least-once: a repeat is allowed, not a reorder
            delivered.append(body["id"])
    assert delivered == expected
    types = [q.json["type"] for q in receiver.accepted]
    assert types.count("line.activated") >= 3 and types.count("line.ended") >= 3, types
    reasons = [q.json["detail"].get("reason") for q in receiver.accepted]
    assert "time" in reasons, reasons
