"""Keys of requests already served, in the ``idempotency_record`` table.

A key belongs to its scope (the route) and to its caller (a digest of the API key that
sent it), so one client's key never collides with, nor replays to, another's. A request
first *claims* its key: a new row, marked pending. Once answered, the row keeps the answer
(2xx only) for ``RETENTION``; a request that failed *releases* its key, so a retry runs
afresh and a refused request leaves no row behind. A pending row older than
``STALE_AFTER`` belonged to a process that died mid-request and may be taken over.
Rows past their expiry are deleted whenever a key is claimed.

Every API process may serve a key, so taking one is a single conditional statement each
way — an insert that does nothing if the key exists, an update that matches only a
pending row while it is stale — and the database lets one request win, on SQLite and
PostgreSQL alike. A claim is known by the time it was taken (``Held.since``): a request
that was taken over, being slower than ``STALE_AFTER`` rather than dead, can neither keep
its answer nor release the key from under the request that now holds it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from models.db import dialect_insert, session_scope
from models.tables import IdempotencyRecord, utcnow

RETENTION = timedelta(hours=24)
STALE_AFTER = timedelta(seconds=60)
CLAIM_ATTEMPTS = 3

log = logging.getLogger("api")


@dataclass(frozen=True)
class Key:
    """An idempotency key as it is kept: what it is for, whose it is, and the key."""

    scope: str  # the route, e.g. "POST /v1/balances"; "telna-event", "esimgo-event" for webhooks
    caller: str  # ``Caller.identity``; "" for a carrier, whose event ids are its own
    value: str


@dataclass(frozen=True)
class Held:
    """This request holds the key, since the moment it took it."""

    since: datetime


@dataclass(frozen=True)
class Earlier:
    """What an earlier request with the same key left: its body hash and its answer."""

    request_hash: str
    status_code: int | None
    response: dict[str, Any] | None


def fingerprint(payload: Any) -> str:
    """SHA-256 of a canonical JSON form: the same request however it was spelled."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _row(key: Key) -> list[sa.ColumnElement[bool]]:
    return [
        col(IdempotencyRecord.scope) == key.scope,
        col(IdempotencyRecord.caller) == key.caller,
        col(IdempotencyRecord.key) == key.value,
    ]


def _take(session: Session, key: Key, request_hash: str, now: datetime) -> bool:
    """Insert the key, or take it over if pending and stale; whether this request won."""
    values = {"request_hash": request_hash, "created_at": now, "expires_at": now + RETENTION}
    inserted = session.execute(
        dialect_insert(session, IdempotencyRecord)
        .values(scope=key.scope, caller=key.caller, key=key.value, **values)
        .on_conflict_do_nothing()
        .returning(col(IdempotencyRecord.key))  # not rowcount: psycopg says -1
    )
    if inserted.first() is not None:
        return True
    taken = session.execute(
        sa.update(IdempotencyRecord)
        .where(*_row(key))
        .where(col(IdempotencyRecord.status_code).is_(None))
        .where(col(IdempotencyRecord.created_at) < now - STALE_AFTER)
        .values(**values)
        .returning(col(IdempotencyRecord.key))
    )
    return taken.first() is not None


def claim(url: str, key: Key, request_hash: str) -> Held | Earlier:
    """Take ``key`` for this request, or say what the request that has it left."""
    for _ in range(CLAIM_ATTEMPTS):
        now = utcnow()
        with session_scope(url) as session:
            session.execute(
                sa.delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) < now)
            )
            if _take(session, key, request_hash, now):
                return Held(now)
            row = session.get(IdempotencyRecord, (key.scope, key.caller, key.value))
            if row is not None:
                return Earlier(row.request_hash, row.status_code, row.response)
        # Released between our insert and our read: try again.
    raise RuntimeError(f"could not claim idempotency key in {key.scope}")


def complete(url: str, key: Key, held: Held, status_code: int, response: dict[str, Any]) -> None:
    """Keep the answer of the request holding ``key``."""
    with session_scope(url) as session:
        kept = session.execute(
            sa.update(IdempotencyRecord)
            .where(*_row(key), col(IdempotencyRecord.created_at) == held.since)
            .where(col(IdempotencyRecord.status_code).is_(None))
            .values(status_code=status_code, response=response)
            .returning(col(IdempotencyRecord.key))
        )
        if kept.first() is None:
            log.warning("idempotency key in %s was taken over while its request ran", key.scope)


def release(url: str, key: Key, held: Held) -> None:
    """Forget ``key``: its request failed, so a retry must run afresh."""
    with session_scope(url) as session:
        session.execute(
            sa.delete(IdempotencyRecord)
            .where(*_row(key), col(IdempotencyRecord.created_at) == held.since)
            .where(col(IdempotencyRecord.status_code).is_(None))
        )


Answer = tuple[int, dict[str, Any]]


async def run_once(
    url: str, key: Key, request_hash: str, run: Callable[[], Awaitable[Answer]]
) -> tuple[int, dict[str, Any], bool]:
    """``run()``'s answer, computed once per key: (status, body, replayed).

    The same key with another request is a 409, as is one whose first request still runs.
    """
    claimed = await run_in_threadpool(claim, url, key, request_hash)
    if isinstance(claimed, Earlier):
        if claimed.request_hash != request_hash:
            raise ApiError(
                409, "idempotency_key_reused", "this Idempotency-Key came with another body"
            )
        if claimed.status_code is None or claimed.response is None:
            raise ApiError(
                409, "idempotency_key_in_use", "a request with this key is still running"
            )
        return claimed.status_code, claimed.response, True
    try:
        status, content = await run()
    except BaseException:
        await run_in_threadpool(release, url, key, claimed)
        raise
    await run_in_threadpool(complete, url, key, claimed, status, content)
    return status, content, False
