"""/metrics from the database: balances by state, audit findings by kind and the notification
backlog, each at a cost that does not grow with the ledger."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, func, insert, select

from models.db import get_engine, init_db, session_scope
from models.identifiers import make_iccid
from models.outbox import Cursor
from models.tables import Balance, Esim, LineEvent, NotificationCursor
from tests.api.helpers import offline_api, offline_settings


def _event(n: int, kind: str, seq: int | None = 1) -> LineEvent:
    return LineEvent(
        key=f"bal_m:{n}", balance_id="bal_m", seq=seq, kind=kind, actor="audit",
        at=datetime.now(UTC), detail={},
    )  # fmt: skip


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
STEPS_PER_COUNT = 10
DATABASE_GAUGES = ("esim_balances", "esim_audit_findings_recorded", "esim_notifications_pending")


def _scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics")
    assert response.status_code == 200
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_metrics_count_audit_findings_by_kind_and_undelivered_notifications(
    tmp_path: Path,
) -> None:
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    kinds = ["audit_ghost_line", "audit_ghost_line", "audit_missing_workflow", "activated"]
    with session_scope(settings.database_url) as session:
        session.add_all(_event(n, kind) for n, kind in enumerate(kinds))
    with offline_api(settings) as url:
        samples = _scrape(url)
        assert samples[("esim_audit_findings_recorded", (("kind", "ghost_line"),))] == 2
        assert samples[("esim_audit_findings_recorded", (("kind", "missing_workflow"),))] == 1
        assert ("esim_audit_findings_recorded", (("kind", "activated"),)) not in samples
        assert samples[("esim_notifications_pending", ())] == 0  # never turned on
        cursor = Cursor(settings.database_url, "test", 30)
        start = cursor.claim()
        assert start == 4
        with session_scope(settings.database_url) as session:
            session.add_all(
                [_event(4, "activated"), _event(5, "ordered"), _event(6, "cancelled", None),
                 _event(7, "failing", None), _event(8, "audit_ghost_line")]
            )  # fmt: skip
        samples = _scrape(url)
        # activated, failing and the audit's finding; not an order or the balance's end.
        assert samples[("esim_notifications_pending", ())] == 3
        assert samples[("esim_audit_findings_recorded", (("kind", "ghost_line"),))] == 3


def test_a_kind_that_only_looks_like_an_audit_finding_is_not_one(tmp_path: Path) -> None:
    """`_` is a LIKE wildcard: `audit_%` would take `auditor_note` for a finding."""
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    with session_scope(settings.database_url) as session:
        session.add_all([_event(0, "auditor_note"), _event(1, "audit_ghost_line")])
    with offline_api(settings) as url:
        samples = _scrape(url)
    findings = {dict(labels)["kind"] for name, labels in samples if name.startswith("esim_audit")}
    assert findings == {"ghost_line"}


@contextmanager
def _counting_sqlite_steps(url: str) -> Iterator[list[int]]:
    """Counts, in tens, the virtual machine steps of every statement SQLite runs on
    ``url``'s engine: what a query costs, whatever the machine's speed."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    def checkout(connection: sqlite3.Connection, *_: object) -> None:
        connection.set_progress_handler(count, STEPS_PER_COUNT)

    def checkin(connection: sqlite3.Connection, *_: object) -> None:
        connection.set_progress_handler(None, 0)

    engine = get_engine(url)
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield steps
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


def _history(url: str, balances: int, events_each: int) -> None:
    """Closed balances, each with its ledger, and the notification cursor past it all."""
    tag = uuid.uuid4().hex[:8]
    now = datetime.now(UTC)
    iccids = [make_iccid(f"8944{uuid.uuid4().int % 10**14:014d}") for _ in range(balances)]
    ids = [f"bal_h{tag}{n}" for n in range(balances)]
    kinds = ["ordered", "activated", "usage_threshold", "expired"]
    with session_scope(url) as session:
        session.execute(insert(Esim), [{"iccid": i, "carrier": "telna"} for i in iccids])
        session.execute(
            insert(Balance),
            [
                {"id": b, "iccid": i, "carrier": "telna", "product_id": "p", "policy": {},
                 "state": "Completed" if n % 2 else "Cancelled", "workflow_id": f"balance-{i}",
                 "closed_at": now}
                for n, (b, i) in enumerate(zip(ids, iccids, strict=True))
            ],
        )  # fmt: skip
        session.execute(
            insert(LineEvent),
            [
                {"key": f"{b}:{n}", "balance_id": b, "seq": n // 4 + 1, "kind": kinds[n % 4],
                 "actor": "workflow", "at": now, "detail": {}}
                for b in ids
                for n in range(events_each)
            ],
        )  # fmt: skip
        last = session.execute(select(func.max(LineEvent.id))).scalar_one()
        cursor = session.get(NotificationCursor, "webhook")
        assert cursor is not None
        cursor.last_event_id = last


def _gauges(samples: Samples) -> Samples:
    """The samples read from the database."""
    return {key: value for key, value in samples.items() if key[0] in DATABASE_GAUGES}


def test_a_scrape_costs_the_same_whatever_the_size_of_the_ledger(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    url = settings.database_url
    init_db(url)
    with session_scope(url) as session:
        for n, state in enumerate(["Active", "Active", "Paused", "Failing"]):
            iccid = make_iccid(f"8944{uuid.uuid4().int % 10**14:014d}")
            session.add(Esim(iccid=iccid, carrier="telna"))
            session.flush()
            session.add(
                Balance(id=f"bal_open{n}", iccid=iccid, carrier="telna", product_id="p",
                        state=state, workflow_id=f"balance-{iccid}")
            )  # fmt: skip
        session.add_all([_event(0, "audit_ghost_line"), _event(1, "activated")])
    Cursor(url, "test", 30).claim()
    with offline_api(settings) as api_url, _counting_sqlite_steps(url) as steps:
        _history(url, balances=20, events_each=20)
        _scrape(api_url)
        before, small = steps[0], _scrape(api_url)
        cost_small = steps[0] - before
        _history(url, balances=2_000, events_each=20)
        before, large = steps[0], _scrape(api_url)
        cost_large = steps[0] - before
    # 100 times the history: the same cost, give or take a level of a B-tree.
    assert cost_large <= cost_small * 1.25, (cost_small, cost_large)
    assert _gauges(small) == _gauges(large)
    assert large[("esim_balances", (("state", "Active"),))] == 2
    assert large[("esim_balances", (("state", "Failing"),))] == 1
    assert large[("esim_audit_findings_recorded", (("kind", "ghost_line"),))] == 1
