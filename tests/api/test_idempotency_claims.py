"""Idempotency keys in the database, on SQLite and PostgreSQL: a stale key is taken over
by one request only, whatever the number of API processes racing for it, and a key
belongs to the caller that sent it."""

from __future__ import annotations

import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from api import idempotency
from api.idempotency import Earlier, Held, Key
from models.db import migrate, session_scope
from models.tables import IdempotencyRecord, utcnow

SCOPE = "POST /v1/balances"
TAKERS = 8
ROUNDS = 10


def _key(caller: str = "caller-a") -> Key:
    return Key(SCOPE, caller, uuid.uuid4().hex)


def _stale(url: str, key: Key) -> None:
    """A pending key left by a request whose process died."""
    long_ago = utcnow() - idempotency.STALE_AFTER - timedelta(seconds=5)
    with session_scope(url) as session:
        session.add(
            IdempotencyRecord(
                scope=key.scope, caller=key.caller, key=key.value, request_hash="dead",
                created_at=long_ago, expires_at=long_ago + idempotency.RETENTION,
            )
        )  # fmt: skip


def _race(url: str, key: Key) -> list[Held | Earlier]:
    """``TAKERS`` requests, each on its own connection, claim ``key`` at the same moment."""
    barrier = threading.Barrier(TAKERS)

    def take(n: int) -> Held | Earlier:
        barrier.wait(timeout=10)
        return idempotency.claim(url, key, f"hash-{n}")

    with ThreadPoolExecutor(TAKERS) as pool:
        return [f.result(timeout=60) for f in [pool.submit(take, n) for n in range(TAKERS)]]


def test_a_stale_key_is_taken_over_by_one_request_only(database_url: str) -> None:
    migrate(database_url)
    for _ in range(ROUNDS):
        key = _key()
        _stale(database_url, key)
        results = _race(database_url, key)
        assert len([r for r in results if isinstance(r, Held)]) == 1, results
        assert all(r.status_code is None for r in results if isinstance(r, Earlier)), results


def test_a_new_key_is_taken_by_one_request_only(database_url: str) -> None:
    migrate(database_url)
    for _ in range(ROUNDS):
        results = _race(database_url, _key())
        assert len([r for r in results if isinstance(r, Held)]) == 1, results


def test_a_request_taken_over_neither_keeps_its_answer_nor_frees_the_key(
    database_url: str,
) -> None:
    migrate(database_url)
    key = _key()
    claimed = idempotency.claim(database_url, key, "h")
    assert isinstance(claimed, Held)
    slow = Held(claimed.since - idempotency.STALE_AFTER * 2)
    with session_scope(database_url) as session:  # the slow request's claim goes stale
        row = session.get(IdempotencyRecord, (key.scope, key.caller, key.value))
        assert row is not None
        row.created_at = slow.since
    later = idempotency.claim(database_url, key, "h")
    assert isinstance(later, Held)
    idempotency.release(database_url, key, slow)
    idempotency.complete(database_url, key, slow, 201, {"from": "slow"})
    assert idempotency.claim(database_url, key, "h") == Earlier("h", None, None)
    idempotency.complete(database_url, key, later, 201, {"from": "later"})
    assert idempotency.claim(database_url, key, "h") == Earlier("h", 201, {"from": "later"})


def test_a_key_belongs_to_its_caller(database_url: str) -> None:
    migrate(database_url)
    mine = _key("caller-a")
    theirs = Key(mine.scope, "caller-b", mine.value)
    held = idempotency.claim(database_url, mine, "body-1")
    assert isinstance(held, Held)
    idempotency.complete(database_url, mine, held, 201, {"id": "bal_a"})
    assert isinstance(idempotency.claim(database_url, theirs, "body-2"), Held)
    assert idempotency.claim(database_url, mine, "body-1") == Earlier(
        "body-1", 201, {"id": "bal_a"}
    )
