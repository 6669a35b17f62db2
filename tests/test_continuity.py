"""Continuity figures from carrier-reported line times and ledger events (pure functions)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlmodel import select

from models.continuity import (
    Continuity,
    balance_continuity,
    fleet_continuity,
    load_continuity,
    load_fleet_continuity,
)
from models.db import init_db, session_scope
from models.tables import Balance, BalanceLine, Esim, LineEvent
from workflows.usage import crossed

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def balance(bid: str = "bal_a", carrier: str = "telna", **fields: Any) -> Balance:
    return Balance(
        id=bid,
        iccid=f"iccid-{bid}",
        carrier=carrier,
        product_id="telna-compressed-60s",
        workflow_id=f"balance-{bid}",
        **fields,
    )


def line(
    seq: int,
    start: float | None,
    end: float | None = None,
    exhausted: float | None = None,
    state: str | None = None,
    bid: str = "bal_a",
    carrier: str = "telna",
) -> BalanceLine:
    return BalanceLine(
        balance_id=bid,
        seq=seq,
        iccid=f"iccid-{bid}",
        carrier=carrier,
        reference=f"{bid}:{seq}",
        product_id="telna-compressed-60s",
        state=state or ("active" if end is None else "expired"),
        allowance_bytes=1000,
        activated_at=at(start) if start is not None else None,
        ended_at=at(end) if end is not None else None,
        exhausted_at=at(exhausted) if exhausted is not None else None,
    )


def event(
    kind: str, when: float, seq: int | None = None, bid: str = "bal_a", **detail: Any
) -> LineEvent:
    key = f"{bid}:{kind}:{when}:{seq}"
    return LineEvent(
        key=key, balance_id=bid, seq=seq, kind=kind, actor="workflow", at=at(when), detail=detail
    )


def rotation(seq: int, when: float, reason: str = "time", bid: str = "bal_a") -> LineEvent:
    return event("activated", when, seq, bid, reason=reason)


def test_an_open_line_covers_until_now_without_gap() -> None:
    figures = balance_continuity(balance(), [line(1, 0)], [event("activated", 0, 1)], at(100))
    assert figures == Continuity(measured_seconds=100)


def test_a_hole_between_two_lines_is_a_gap_and_rotations_count_by_reason() -> None:
    lines = [line(1, 0, 60), line(2, 65, 120), line(3, 118)]
    events = [rotation(2, 65, "time"), rotation(3, 118, "usage"), event("activated", 0, 1)]
    figures = balance_continuity(balance(), lines, events, at(150))
    assert figures.gap_seconds == pytest.approx(5)
    assert figures.gap_seconds_max == pytest.approx(5)
    assert figures.overlap_seconds == pytest.approx(2)
    assert figures.measured_seconds == pytest.approx(150)
    assert (figures.rotations, figures.early_rotations) == (2, 1)


def test_two_lines_active_at_once_overlap_and_are_no_gap() -> None:
    lines = [line(1, 0, 62), line(2, 57, 110, state="cancelled")]
    figures = balance_continuity(balance(closed_at=at(110)), lines, [], at(500))
    assert figures.overlap_seconds == pytest.approx(5)
    assert figures.gap_seconds == 0
    assert figures.measured_seconds == pytest.approx(110)


def test_a_paused_stretch_is_no_gap_but_waiting_for_the_fresh_line_is() -> None:
    lines = [line(1, 0, 30, state="cancelled"), line(2, 52)]
    events = [event("paused", 29), event("resumed", 50)]
    figures = balance_continuity(balance(), lines, events, at(60))
    # 0-29 served, 29-50 paused (not measured), 50-52 waiting: a gap, 52-60 served.
    assert figures.measured_seconds == pytest.approx(39)
    assert figures.gap_seconds == pytest.approx(2)
    assert figures.rotations == 0


def test_a_balance_still_paused_measures_nothing_after_the_pause() -> None:
    lines = [line(1, 0, 10, state="cancelled")]
    figures = balance_continuity(balance(), lines, [event("paused", 9.5)], at(100))
    assert figures.measured_seconds == pytest.approx(9.5)
    assert figures.gap_seconds == 0


# A line in place (Webbing) keeps serving, throttled, once used up; a Telna one ends.
WEBBING = {"carrier": "webbing"}


def test_an_exhausted_serving_line_is_throttled_until_the_next_line_serves() -> None:
    lines = [line(1, 0, 62, exhausted=20, **WEBBING), line(2, 57, **WEBBING)]
    figures = balance_continuity(balance(**WEBBING), lines, [rotation(2, 57)], at(80))
    # Throttled from 20 until line 2 came up at 57: a fresh line beside it serves fast.
    assert figures.throttled_seconds == pytest.approx(37)
    assert figures.overlap_seconds == pytest.approx(5)
    assert figures.gap_seconds == 0


def test_an_open_exhausted_line_is_throttled_until_now() -> None:
    lines = [line(1, 0, exhausted=12.5, **WEBBING)]
    figures = balance_continuity(balance(**WEBBING), lines, [], at(40))
    assert figures.throttled_seconds == pytest.approx(27.5)


def test_a_telna_line_used_up_has_ended_and_leaves_a_gap_until_the_next_one() -> None:
    """Telna ends a package whose data is used up (CARRIERS.md 2.6): the workflow records
    its end at that moment, active still or left by usage, and no second is throttled."""
    used_up = [line(1, 0, exhausted=12.5, end=12.5, state="active")]
    figures = balance_continuity(balance(), used_up, [], at(40))
    assert (figures.gap_seconds, figures.throttled_seconds) == (pytest.approx(27.5), 0)
    lines = [line(1, 0, 20, exhausted=20, state="exhausted"), line(2, 26)]
    figures = balance_continuity(balance(), lines, [rotation(2, 26, "usage")], at(80))
    assert (figures.gap_seconds, figures.throttled_seconds) == (pytest.approx(6), 0)


def test_the_since_cut_measures_only_later_time_and_rotations() -> None:
    lines = [line(1, 0, 60, exhausted=40, **WEBBING), line(2, 70, 130), line(3, 130)]
    events = [rotation(2, 71), rotation(3, 131, "usage")]
    whole = balance_continuity(balance(**WEBBING), lines, events, at(200))
    assert (whole.gap_seconds, whole.throttled_seconds, whole.rotations) == (10, 20, 2)
    cut = balance_continuity(balance(**WEBBING), lines, events, at(200), since=at(65))
    assert cut.measured_seconds == pytest.approx(135)
    assert cut.gap_seconds == pytest.approx(5)
    assert cut.throttled_seconds == 0
    assert (cut.rotations, cut.early_rotations) == (2, 1)
    later = balance_continuity(balance(**WEBBING), lines, events, at(200), since=at(100))
    assert (later.measured_seconds, later.rotations, later.early_rotations) == (100, 1, 1)
    assert (
        balance_continuity(balance(**WEBBING), lines, events, at(200), since=at(300))
        == Continuity()
    )


def test_closing_ends_the_span_at_the_cancel_request_not_the_carrier_end() -> None:
    lines = [line(1, 0, 40.2, state="cancelled")]
    closed = balance(state="Cancelled", closed_at=at(40.3))
    figures = balance_continuity(closed, lines, [event("cancel_requested", 40)], at(1000))
    assert figures.measured_seconds == pytest.approx(40)
    assert figures.gap_seconds == 0


def test_a_completed_term_ends_with_its_last_line() -> None:
    done = balance(state="Completed", closed_at=at(60.4))
    figures = balance_continuity(done, [line(1, 0, 60)], [], at(1000))
    assert figures.measured_seconds == pytest.approx(60)
    assert figures.gap_seconds == 0


def test_no_activated_line_yet_gives_zero_figures() -> None:
    figures = balance_continuity(balance(), [line(1, None, state="scheduled")], [], at(10))
    assert figures == Continuity()


def test_fleet_sums_per_carrier_and_keeps_the_worst_gap() -> None:
    a, b, c = balance("a"), balance("b"), balance("c", carrier="webbing")
    lines = [
        line(1, 0, 60, bid="a"),
        line(2, 63, bid="a"),
        line(1, 0, 60, bid="b"),
        line(2, 61, bid="b"),
        line(1, 0, exhausted=50, bid="c", **WEBBING),
    ]
    events = [rotation(2, 63, bid="a"), rotation(2, 61, "usage", bid="b")]
    fleet = fleet_continuity([a, b, c], lines, events, at(100))
    assert fleet.total.balances == 3
    assert fleet.total.gap_seconds == pytest.approx(4)
    assert fleet.total.gap_seconds_max == pytest.approx(3)
    assert fleet.total.throttled_seconds == pytest.approx(50)
    assert (fleet.total.rotations, fleet.total.early_rotations) == (2, 1)
    telna, webbing = fleet.carriers["telna"], fleet.carriers["webbing"]
    assert (telna.balances, telna.gap_seconds, telna.throttled_seconds) == (2, 4, 0)
    assert (webbing.balances, webbing.gap_seconds, webbing.throttled_seconds) == (1, 0, 50)


def test_loading_from_the_database_gives_the_same_figures(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    init_db(url)
    a, b = balance("a"), balance("b", closed_at=at(50), state="Cancelled")
    lines = [line(1, 0, 60, bid="a"), line(2, 64, bid="a"), line(1, 0, 49.5, bid="b")]
    events = [rotation(2, 64, bid="a"), event("cancel_requested", 49, bid="b")]
    with session_scope(url) as session:
        session.add_all([Esim(iccid=f"iccid-{x}", carrier="telna") for x in "ab"])
        session.flush()
        session.add_all([a, b])
        session.flush()
        session.add_all([*lines, *events, event("ordered", 1, 1, bid="a")])
    pure = fleet_continuity([balance("a"), balance("b", closed_at=at(50))], lines, events, at(90))
    with session_scope(url) as session:
        by_id = load_continuity(session, list(session.exec(select(Balance)).all()), at(90))
        assert by_id["a"].gap_seconds == pytest.approx(4)
        assert by_id["b"].measured_seconds == pytest.approx(49)
        fleet = load_fleet_continuity(session, at(90))
        assert fleet.total == pure.total
        assert fleet.total.measured_seconds == pytest.approx(90 + 49)
        # Closed before the cut: not in the fleet any more.
        assert load_fleet_continuity(session, at(90), since=at(55)).total.balances == 1


def test_usage_thresholds_are_crossed_once_each_as_usage_grows() -> None:
    assert crossed(0, 499, 1000) == []
    assert crossed(0, 500, 1000) == [50]
    assert crossed(500, 960, 1000) == [80, 95]
    assert crossed(960, 960, 1000) == []
    assert crossed(960, 1000, 1000) == [100]
    assert crossed(0, 1000, 1000) == [50, 80, 95, 100]
