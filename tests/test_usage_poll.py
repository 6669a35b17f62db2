"""The usage poller's threshold and watermark logic, and its activity over a database.

The activity runs in Temporal's ActivityEnvironment against a paged fake carrier and a
fake Temporal client that keeps the signals it was sent; the database is real (SQLite,
and PostgreSQL where the cluster runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import pytest
from sqlmodel import select
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import ActivityEnvironment

from activities.usage_poll import UsagePollActivities, WatchedLine, crossed, due, thresholds
from carriers.base import Carrier, LineUsage, UsagePage
from models.db import init_db, session_scope
from models.identifiers import make_iccid
from models.payloads import Policy, UsagePollInput, UsagePollResult, UsageReport
from models.tables import Balance, BalanceLine, Esim, UsageWatermark

MB = 1_000_000
T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_thresholds_are_the_policy_fractions_and_the_whole_allowance() -> None:
    assert thresholds(Policy(), 1000) == [800, 950, 1000]
    assert thresholds(Policy(preorder_fraction=0.5, switch_fraction=0.5), 10) == [5, 10]
    assert thresholds(Policy(switch_fraction=1.0), 100) == [80, 100]


@pytest.mark.parametrize(
    ("used", "signalled", "expected"),
    [
        (0, 0, False),
        (799, 0, False),
        (800, 0, True),  # reaching a threshold counts
        (900, 800, False),  # still below the next one
        (950, 800, True),
        (1000, 950, True),
        (1000, 1000, False),  # nothing left to cross
        (2000, 1000, False),
        (960, 0, True),  # two at once: one signal
        (700, 900, False),  # a late, lower reading
    ],
)
def test_a_signal_is_due_only_when_usage_crosses_a_threshold_beyond_the_watermark(
    used: int, signalled: int, expected: bool
) -> None:
    assert crossed(used, signalled, [800, 950, 1000]) is expected


def test_the_carriers_allowance_wins_and_the_lines_is_the_fallback() -> None:
    line = WatchedLine("balance-x", 1, "b:1", 1000, Policy(), 0)
    reading = LineUsage(line_id="p", used_bytes=800, allowance_bytes=0, observed_at=T0)
    assert due(reading, line)
    bigger = reading.model_copy(update={"allowance_bytes": 2000})
    assert not due(bigger, line)


# --- the activity --------------------------------------------------------------------


@dataclass
class PagedCarrier:
    """A carrier whose account usage is read in pages; counts the pages asked for."""

    readings: list[LineUsage]
    name: str = "webbing"
    calls: list[tuple[int, int]] = field(default_factory=list)

    async def usage_page(self, page: int, since: date, page_size: int) -> UsagePage:
        self.calls.append((page, page_size))
        start = (page - 1) * page_size
        return UsagePage(
            usage=self.readings[start : start + page_size],
            page=page,
            pages=-(-len(self.readings) // page_size),
            total=len(self.readings),
        )


@dataclass
class SignalledWorkflow:
    client: FakeTemporal
    workflow_id: str

    async def signal(self, name: str, arg: Any) -> None:
        if self.workflow_id not in self.client.running:
            raise RPCError("workflow not found", RPCStatusCode.NOT_FOUND, b"")
        self.client.signals.append((self.workflow_id, name, arg))


@dataclass
class FakeTemporal:
    """The part of the Temporal client the poller uses: signals to running workflows."""

    running: set[str]
    signals: list[tuple[str, str, UsageReport]] = field(default_factory=list)

    def get_workflow_handle(self, workflow_id: str) -> SignalledWorkflow:
        return SignalledWorkflow(self, workflow_id)


def _balance(url: str, n: int, state: str = "active", closed: bool = False, **policy: Any) -> str:
    """An open balance (closed if asked) with line 1 in ``state``; returns its line id."""
    iccid = make_iccid(f"8944{n:014d}")
    balance_id = f"bal_{n}"
    with session_scope(url) as session:
        session.add(Esim(iccid=iccid, carrier="webbing"))
        session.flush()  # no relationships: rows go in the order of their foreign keys
        session.add(
            Balance(
                id=balance_id,
                iccid=iccid,
                open_iccid=None if closed else iccid,
                carrier="webbing",
                product_id="webbing-9060",
                policy=policy,
                workflow_id=f"balance-{iccid}",
                closed_at=T0 if closed else None,
            )
        )
        session.flush()
        session.add(
            BalanceLine(
                balance_id=balance_id,
                seq=1,
                iccid=iccid,
                carrier="webbing",
                carrier_line_id=f"pkg-{n}",
                reference=f"{balance_id}:1",
                product_id="webbing-9060",
                state=state,
                allowance_bytes=10 * MB,
            )
        )
    return f"pkg-{n}"


def _reading(line_id: str, used: int, seconds: float = 0) -> LineUsage:
    return LineUsage(
        line_id=line_id,
        used_bytes=used,
        allowance_bytes=10 * MB,
        observed_at=T0 + timedelta(seconds=seconds),
    )


async def _poll(
    url: str, carrier: PagedCarrier, temporal: FakeTemporal, page_size: int = 2
) -> UsagePollResult:
    activities = UsagePollActivities(
        {"webbing": cast(Carrier, carrier)}, cast(Client, temporal), url, page_size=page_size
    )
    return await ActivityEnvironment().run(activities.poll_usage, UsagePollInput(carrier="webbing"))


def _watermarks(url: str) -> dict[str, int]:
    with session_scope(url) as session:
        rows = session.exec(select(UsageWatermark)).all()
        return {row.carrier_line_id: row.signalled_bytes for row in rows}


async def test_a_poll_signals_only_crossings_and_remembers_them(database_url: str) -> None:
    init_db(database_url)
    quiet, busy, eager = (_balance(database_url, n) for n in (1, 2, 3))
    _balance(database_url, 4, preorder_fraction=0.3, switch_fraction=0.5)  # policy per balance
    closed = _balance(database_url, 5, closed=True)
    ended = _balance(database_url, 6, state="expired")
    workflows = {f"balance-{make_iccid(f'8944{n:014d}')}" for n in range(1, 7)}
    readings = [
        _reading(quiet, 1 * MB),
        _reading(busy, 8 * MB),
        _reading(eager, 10 * MB),
        _reading("pkg-4", 3 * MB),
        _reading(closed, 9 * MB),
        _reading(ended, 9 * MB),
        _reading("pkg-of-another-system", 9 * MB),
    ]
    carrier, temporal = PagedCarrier(readings), FakeTemporal(workflows)
    first = await _poll(database_url, carrier, temporal)
    assert first == UsagePollResult(pages=4, lines_read=7, lines_open=4, signals=3, gone=0)
    assert carrier.calls == [(1, 2), (2, 2), (3, 2), (4, 2)]
    assert sorted(r.used_bytes for _, _, r in temporal.signals) == [3 * MB, 8 * MB, 10 * MB]
    assert all(name == "usage_reported" for _, name, _ in temporal.signals)
    assert {r.reference for _, _, r in temporal.signals} == {"bal_2:1", "bal_3:1", "bal_4:1"}
    assert _watermarks(database_url) == {busy: 8 * MB, eager: 10 * MB, "pkg-4": 3 * MB}

    # Usage moves, but only the busy line crosses another threshold (95 %).
    carrier.readings = [
        _reading(quiet, 2 * MB, 5),
        _reading(busy, 9_600_000, 5),
        _reading(eager, 10 * MB, 5),
        _reading("pkg-4", 4 * MB, 5),
    ]
    second = await _poll(database_url, carrier, temporal)
    assert (second.signals, second.lines_open) == (1, 4)
    assert temporal.signals[-1][2].used_bytes == 9_600_000
    assert _watermarks(database_url)[busy] == 9_600_000

    # Nothing moves: no signal at all.
    third = await _poll(database_url, carrier, temporal)
    assert third.signals == 0 and len(temporal.signals) == 4


async def test_a_balance_whose_workflow_is_gone_does_not_fail_the_poll(
    database_url: str,
) -> None:
    init_db(database_url)
    gone, alive = _balance(database_url, 11), _balance(database_url, 12)
    carrier = PagedCarrier([_reading(gone, 9 * MB), _reading(alive, 9 * MB)])
    temporal = FakeTemporal({f"balance-{make_iccid(f'8944{12:014d}')}"})
    result = await _poll(database_url, carrier, temporal)
    assert (result.signals, result.gone) == (1, 1)
    # Marked as well, so the stale balance is not retried at every poll.
    assert set(_watermarks(database_url)) == {gone, alive}
    again = await _poll(database_url, carrier, temporal)
    assert (again.signals, again.gone) == (0, 0)


async def test_watermarks_of_lines_no_longer_active_are_dropped(database_url: str) -> None:
    init_db(database_url)
    line = _balance(database_url, 21)
    carrier = PagedCarrier([_reading(line, 9 * MB)])
    temporal = FakeTemporal({f"balance-{make_iccid(f'8944{21:014d}')}"})
    await _poll(database_url, carrier, temporal)
    assert _watermarks(database_url) == {line: 9 * MB}
    with session_scope(database_url) as session:
        row = session.exec(select(BalanceLine).where(BalanceLine.carrier_line_id == line)).one()
        row.state = "exhausted"
        session.add(row)
    carrier.readings = []
    await _poll(database_url, carrier, temporal)
    assert _watermarks(database_url) == {}
