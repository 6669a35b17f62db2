"""Operator actions that buy a line (resume, rotate) are rate limited, per balance and
per API key, so neither a slip nor a stolen key can buy without limit.

A fixed window (``ACTION_LIMITS__WINDOW_SECONDS``, counted from the epoch) holds one row
per scope in ``action_quota``: the balance, and the caller's key digest (or the key a
dashboard session was signed in with). Taking a turn is one conditional upsert per scope
(``INSERT ... ON CONFLICT DO UPDATE ... WHERE used < limit``) in one transaction, so two
API processes can never both take the last turn, and a refusal changes nothing: the
answer is 429 ``action_limited`` with ``Retry-After`` (seconds to the window's end). A
turn whose signal then fails (Temporal down) is given back.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import sqlalchemy as sa

from api.errors import ApiError
from config import ActionLimits
from models.db import dialect_insert_for, session_scope
from models.tables import ActionQuota

BUYING = frozenset({"resume", "rotate_now"})  # the signals that buy a line

QUOTA: sa.Table = ActionQuota.__table__  # type: ignore[attr-defined]
_SCOPE = sa.bindparam("q_scope", type_=QUOTA.c.scope.type)
_WINDOW = sa.bindparam("q_window", type_=QUOTA.c.window_start.type)
_GIVE_BACK = (
    sa.update(QUOTA)
    .where(QUOTA.c.scope == _SCOPE, QUOTA.c.window_start == _WINDOW, QUOTA.c.used > 0)
    .values(used=QUOTA.c.used - 1)
)
_FORGET = sa.delete(QUOTA).where(QUOTA.c.window_start < _WINDOW)


@cache
def _take(dialect: str) -> Any:
    insert = dialect_insert_for(dialect, QUOTA).values(scope=_SCOPE, window_start=_WINDOW, used=1)
    return insert.on_conflict_do_update(
        index_elements=[QUOTA.c.scope, QUOTA.c.window_start],
        set_={"used": QUOTA.c.used + 1},
        where=QUOTA.c.used < sa.bindparam("q_limit", type_=sa.Integer()),
    ).returning(QUOTA.c.used)


def scopes(limits: ActionLimits, balance_id: str, identity: str) -> list[tuple[str, int, str]]:
    """(scope, limit, what it limits) of an action on ``balance_id`` by ``identity``."""
    return [
        (f"balance:{balance_id}", limits.per_balance, f"balance {balance_id}"),
        (f"key:{identity}", limits.per_key, "this API key"),
    ]


def window_of(limits: ActionLimits, now: datetime) -> tuple[datetime, datetime]:
    size = limits.window_seconds
    start = datetime.fromtimestamp(now.timestamp() // size * size, UTC)
    return start, start + timedelta(seconds=size)


def take_turn(
    url: str, limits: ActionLimits, balance_id: str, identity: str, now: datetime | None = None
) -> datetime:
    """Take one turn in both scopes, or raise 429; returns the window's start."""
    now = now or datetime.now(UTC)
    start, end = window_of(limits, now)
    with session_scope(url) as session:
        take = _take(session.get_bind().dialect.name)
        for scope, limit, what in scopes(limits, balance_id, identity):
            if limit <= 0:
                continue
            params = {"q_scope": scope, "q_window": start, "q_limit": limit}
            if session.execute(take, params).first() is None:
                wait = max(1, math.ceil((end - now).total_seconds()))
                raise ApiError(
                    429,
                    "action_limited",
                    f"{what} has resumed or rotated {limit} times in this "
                    f"{limits.window_seconds} s window: try again in {wait} s",
                    headers={"Retry-After": str(wait)},
                )
        session.execute(_FORGET, {"q_window": start})
    return start


def give_back(
    url: str, limits: ActionLimits, balance_id: str, identity: str, window: datetime
) -> None:
    """The action did not reach its balance: its turn is not spent."""
    with session_scope(url) as session:
        for scope, limit, _ in scopes(limits, balance_id, identity):
            if limit > 0:
                session.execute(_GIVE_BACK, {"q_scope": scope, "q_window": window})
