"""The timeline's coverage lane and its SVG."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from api.dashboard import timeline
from api.dashboard.timeline import Bar, Group, Lane

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_coverage_names_gaps_overlaps_throttling_and_pauses() -> None:
    lines = [(at(0), at(10)), (at(9), at(20)), (at(25), at(40))]
    stretches = timeline.coverage(
        lines, [(at(15), at(20))], at(0), at(50), paused=[(at(40), at(50))]
    )
    kinds = [(a, b, k) for a, b, k in stretches]
    assert kinds == [
        (at(0), at(9), "high_speed"),
        (at(9), at(10), "overlap"),
        (at(10), at(15), "high_speed"),
        (at(15), at(20), "throttled"),
        (at(20), at(25), "gap"),
        (at(25), at(40), "high_speed"),
        (at(40), at(50), "paused"),
    ]
    assert timeline.seconds_of(stretches, "gap") == 5.0


def test_svg_escapes_labels_and_carries_data_attributes() -> None:
    bar = Bar(at(0), at(5), "active", "<b>line</b>", {"seq": "1"})
    lane = Lane('line "1" <x>', [bar], {"side": "ours"})
    svg = timeline.render([Group("ours", [lane])], at(0), at(10), at(5))
    assert "<b>" not in svg and "&lt;x&gt;" in svg
    assert 'data-side="ours" data-seq="1"' in svg
    assert 'class="now"' in svg


def test_tick_step_keeps_the_axis_readable() -> None:
    assert timeline.tick_step(25) == 5
    assert timeline.tick_step(3600) == 600
    assert timeline.tick_step(30 * 86400) >= 86400
