"""Keys of requests already served, in the ``idempotency_record`` table.

A request first *claims* its key: a new row, marked pending. Once answered, the row
keeps the answer (2xx only) for ``RETENTION``; a request that failed *releases* its key,
so a retry runs afresh and a refused request leaves no row behind. A pending row older
than ``STALE_AFTER`` belonged to a process that died mid-request and may be taken over.
Rows past their expiry are deleted whenever a key is claimed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, delete
from starlette.concurrency import run_in_threadpool

from api.errors import ApiError
from models.db import session_scope
from models.tables import IdempotencyRecord, utcnow

RETENTION = timedelta(hours=24)
STALE_AFTER = timedelta(seconds=60)


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


def claim(url: str, scope: str, key: str, request_hash: str) -> Earlier | None:
    """Reserve ``key``; None if this request now holds it, else what the earlier one left."""
    for _ in range(3):
        now = utcnow()
        try:
            with session_scope(url) as session:
                session.exec(
                    delete(IdempotencyRecord).where(col(IdempotencyRecord.expires_at) < now)
                )
                row = session.get(IdempotencyRecord, (scope, key))
                if row is None:
                    row = IdempotencyRecord(
                        scope=scope, key=key, request_hash=request_hash, expires_at=now
                    )
                elif row.status_code is None and now - row.created_at > STALE_AFTER:
                    row.request_hash = request_hash  # abandoned by a dead request
                else:
                    return Earlier(row.request_hash, row.status_code, row.response)
                row.created_at, row.expires_at = now, now + RETENTION
                session.add(row)
            return None
        except IntegrityError:
            continue  # a concurrent request inserted it first: read what it left
    raise RuntimeError(f"could not claim idempotency key in {scope}")


def complete(url: str, scope: str, key: str, status_code: int, response: dict[str, Any]) -> None:
    """Keep the answer of the request holding ``key``."""
    with session_scope(url) as session:
        row = session.get(IdempotencyRecord, (scope, key))
        if row is not None:
            row.status_code, row.response = status_code, response
            session.add(row)


def release(url: str, scope: str, key: str) -> None:
    """Forget ``key``: its request failed, so a retry must run afresh."""
    with session_scope(url) as session:
        row = session.get(IdempotencyRecord, (scope, key))
        if row is not None and row.status_code is None:
            session.delete(row)


Answer = tuple[int, dict[str, Any]]


async def run_once(
    url: str, scope: str, key: str, request_hash: str, run: Callable[[], Awaitable[Answer]]
) -> tuple[int, dict[str, Any], bool]:
    """``run()``'s answer, computed once per key: (status, body, replayed).

    The same key with another request is a 409, as is one whose first request still runs.
    """
    earlier = await run_in_threadpool(claim, url, scope, key, request_hash)
    if earlier is not None:
        if earlier.request_hash != request_hash:
            raise ApiError(
                409, "idempotency_key_reused", "this Idempotency-Key came with another body"
            )
        if earlier.status_code is None or earlier.response is None:
            raise ApiError(
                409, "idempotency_key_in_use", "a request with this key is still running"
            )
        return earlier.status_code, earlier.response, True
    try:
        status, content = await run()
    except BaseException:
        await run_in_threadpool(release, url, scope, key)
        raise
    await run_in_threadpool(complete, url, scope, key, status, content)
    return status, content, False
