"""Operator actions that buy a line are rate limited per balance and per key, atomically
across API processes, and a refusal changes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from api.action_limits import give_back, take_turn
from api.errors import ApiError
from config import ActionLimits
from models.db import migrate, session_scope
from models.tables import ActionQuota

NOW = datetime(2026, 12, 6, 10, 15, tzinfo=UTC)


def used(url: str) -> dict[str, int]:
    with session_scope(url) as session:
        return {row.scope: row.used for row in session.exec(select(ActionQuota)).all()}


def refused(url: str, limits: ActionLimits, balance: str, key: str, now: datetime) -> ApiError:
    with pytest.raises(ApiError) as caught:
        take_turn(url, limits, balance, key, now)
    return caught.value


def test_racing_api_processes_never_take_more_than_the_limit(database_url: str) -> None:
    migrate(database_url)
    limits = ActionLimits(per_balance=6, per_key=100)

    def one(n: int) -> bool:
        try:
            take_turn(database_url, limits, "bal_a", f"key-{n % 3}", NOW)
        except ApiError as error:
            assert error.status == 429
            return False
        return True

    with ThreadPoolExecutor(max_workers=8) as pool:
        taken = sum(pool.map(one, range(24)))
    assert taken == 6
    counts = used(database_url)
    assert counts["balance:bal_a"] == 6
    # The refused ones left no trace in their keys' counts either.
    assert sum(n for scope, n in counts.items() if scope.startswith("key:")) == 6


def test_a_refusal_says_when_to_come_back_and_changes_nothing(database_url: str) -> None:
    migrate(database_url)
    limits = ActionLimits(per_balance=2, per_key=10, window_seconds=3600)
    for _ in range(2):
        take_turn(database_url, limits, "bal_a", "k", NOW)
    error = refused(database_url, limits, "bal_a", "k", NOW)
    assert error.code == "action_limited" and "balance bal_a" in error.message
    assert error.headers == {"Retry-After": str(45 * 60)}  # 10:15 -> 11:00
    assert used(database_url) == {"balance:bal_a": 2, "key:k": 2}
    # Another balance is not held back by this one's limit.
    take_turn(database_url, limits, "bal_b", "k", NOW)


def test_a_key_is_limited_across_balances(database_url: str) -> None:
    migrate(database_url)
    limits = ActionLimits(per_balance=0, per_key=3)
    for n in range(3):
        take_turn(database_url, limits, f"bal_{n}", "k", NOW)
    error = refused(database_url, limits, "bal_9", "k", NOW)
    assert "this API key" in error.message
    take_turn(database_url, limits, "bal_9", "other-key", NOW)


def test_a_turn_given_back_and_a_new_window(database_url: str) -> None:
    migrate(database_url)
    limits = ActionLimits(per_balance=1, per_key=5, window_seconds=600)
    window = take_turn(database_url, limits, "bal_a", "k", NOW)
    assert window == NOW.replace(minute=10)
    refused(database_url, limits, "bal_a", "k", NOW)
    give_back(database_url, limits, "bal_a", "k", window)  # its signal never went out
    take_turn(database_url, limits, "bal_a", "k", NOW)
    later = NOW + timedelta(minutes=10)
    take_turn(database_url, limits, "bal_a", "k", later)
    assert used(database_url) == {"balance:bal_a": 1, "key:k": 1}  # the old window forgotten
