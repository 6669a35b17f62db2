"""A line's price on SQLite and PostgreSQL: written once, by the first write that carries
it, and counted in ``esim_spend`` exactly once, however often or racily it is written."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlmodel import select
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from models.db import migrate, session_scope
from models.payloads import Line, LineState, RecordChanges
from models.spend import load_balance_spend
from models.tables import BalanceLine
from services.metrics import REGISTRY
from tests.store.builders import changes, event, line, new_balance


def _spent(currency: str = "EUR") -> float:
    value = REGISTRY.get_sample_value(
        "esim_spend_total", {"carrier": "telna", "currency": currency}
    )
    return value or 0.0


def _priced(balance_id: str, seq: int, cents: int, state: LineState = LineState.scheduled) -> Line:
    return line(balance_id, seq, state).model_copy(update={"price_cents": cents, "currency": "EUR"})


def _record(store: StoreActivities, *batches: RecordChanges) -> None:
    for batch in batches:
        ActivityEnvironment().run(store.record_changes, batch)


def _prices(url: str, balance_id: str) -> dict[int, tuple[int | None, str | None]]:
    with session_scope(url) as session:
        rows = session.exec(select(BalanceLine).where(BalanceLine.balance_id == balance_id))
        return {row.seq: (row.price_cents, row.currency) for row in rows}


def test_a_purchase_is_written_and_counted_once_and_never_repriced(database_url: str) -> None:
    migrate(database_url)
    store = StoreActivities(database_url)
    balance_id, iccid = new_balance()
    before = _spent()
    ordered = changes(balance_id, iccid, [_priced(balance_id, 1, 150)], [])
    _record(store, ordered, ordered)
    assert _prices(database_url, balance_id) == {1: (150, "EUR")}
    assert _spent() - before == 1.5
    # Later writes of the line (its activation, its end) count nothing more; nor does one
    # that says another price (the row keeps what the purchase cost), nor one without.
    active = _priced(balance_id, 1, 150, LineState.active)
    later = [
        changes(balance_id, iccid, [active], [event(balance_id, 1, "activated")], revision=1),
        changes(balance_id, iccid, [_priced(balance_id, 1, 999, LineState.active)], [], revision=2),
        changes(balance_id, iccid, [line(balance_id, 1, LineState.expired)], [], revision=3),
    ]
    _record(store, *later)
    assert _prices(database_url, balance_id) == {1: (150, "EUR")}
    assert _spent() - before == 1.5


def test_a_line_without_a_price_stays_unpriced_until_one_is_written(database_url: str) -> None:
    migrate(database_url)
    store = StoreActivities(database_url)
    balance_id, iccid = new_balance()
    before = _spent()
    _record(store, changes(balance_id, iccid, [line(balance_id, 1)], []))
    assert _prices(database_url, balance_id) == {1: (None, None)}
    assert _spent() == before
    _record(store, changes(balance_id, iccid, [_priced(balance_id, 2, 250)], [], revision=1))
    assert _prices(database_url, balance_id) == {1: (None, None), 2: (250, "EUR")}
    assert _spent() - before == 2.5


def test_racing_writes_of_one_purchase_count_it_once(database_url: str) -> None:
    migrate(database_url)
    store = StoreActivities(database_url)
    before = _spent()
    rounds = 20
    for _ in range(rounds):
        balance_id, iccid = new_balance()
        batch = changes(balance_id, iccid, [_priced(balance_id, 1, 100)], [])
        barrier = threading.Barrier(2)

        def attempt(batch: RecordChanges = batch, barrier: threading.Barrier = barrier) -> None:
            barrier.wait(timeout=10)
            ActivityEnvironment().run(store.record_changes, batch)

        with ThreadPoolExecutor(2) as pool:
            for future in [pool.submit(attempt) for _ in range(2)]:
                future.result(timeout=30)
    assert _spent() - before == rounds * 1.0


def _refunded_total(currency: str = "EUR") -> float:
    value = REGISTRY.get_sample_value(
        "esim_refunds_total", {"carrier": "telna", "currency": currency}
    )
    return value or 0.0


def _refunds(url: str, balance_id: str) -> dict[int, int | None]:
    with session_scope(url) as session:
        rows = session.exec(select(BalanceLine).where(BalanceLine.balance_id == balance_id))
        return {row.seq: row.refunded_cents for row in rows}


def test_a_refund_to_balance_is_written_and_counted_once_and_inventory_is_none(
    database_url: str,
) -> None:
    """A line the carrier ended unused with its price credited back to the account's
    balance is refunded that price, once; one returned to inventory, or not refunded, is
    not: the inventory holds a bundle, not money."""
    migrate(database_url)
    store = StoreActivities(database_url)
    balance_id, iccid = new_balance()
    before = _refunded_total()
    bought = [_priced(balance_id, seq, 150) for seq in (1, 2, 3)]
    _record(store, changes(balance_id, iccid, bought, []))
    ended = [
        _priced(balance_id, seq, 150, LineState.cancelled).model_copy(update={"refund": refund})
        for seq, refund in ((1, "balance"), (2, "inventory"), (3, "none"))
    ]
    batch = changes(balance_id, iccid, ended, [], revision=1)
    _record(store, batch, batch)  # a retried write refunds nothing more
    assert _refunds(database_url, balance_id) == {1: 150, 2: None, 3: None}
    assert _refunded_total() - before == 1.5
    with session_scope(database_url) as session:
        spend = load_balance_spend(session, balance_id)
    assert [(t.currency, t.cents, t.lines, t.refunded) for t in spend] == [("EUR", 300, 3, 150)]
