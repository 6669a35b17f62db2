"""Line windows by reset rule: rolling, next UTC midnight, next local midnight."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from carriers.windows import window_end, window_end_epoch
from simulators import windows as carrier_windows

DAY = 86_400


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_rolling_lasts_the_validity_from_activation() -> None:
    start = at("2026-03-10T23:59:00")
    assert window_end(start, DAY, "rolling") == at("2026-03-11T23:59:00")
    assert window_end(start, 30, "rolling") == at("2026-03-10T23:59:30")
    assert window_end(start, DAY, "rolling", utc_offset_minutes=480) == at("2026-03-11T23:59:00")


def test_utc_midnight_bought_at_23_59_lasts_one_minute() -> None:
    assert window_end(at("2026-03-10T23:59:00"), DAY, "utc_midnight") == at("2026-03-11T00:00")


def test_utc_midnight_bought_exactly_at_the_reset_gets_a_whole_day() -> None:
    assert window_end(at("2026-03-11T00:00:00"), DAY, "utc_midnight") == at("2026-03-12T00:00")
    just_after = at("2026-03-11T00:00:00") + timedelta(microseconds=1)
    assert window_end(just_after, DAY, "utc_midnight") == at("2026-03-12T00:00")
    just_before = at("2026-03-11T00:00:00") - timedelta(microseconds=1)
    assert window_end(just_before, DAY, "utc_midnight") == at("2026-03-11T00:00")


def test_utc_midnight_ignores_the_offset_and_accepts_any_timezone() -> None:
    singapore = timezone(timedelta(hours=8))
    bought = datetime(2026, 3, 11, 7, 30, tzinfo=singapore)  # 23:30 UTC on the 10th
    assert window_end(bought, DAY, "utc_midnight", utc_offset_minutes=480) == at("2026-03-11")


def test_local_midnight_at_utc_plus_8_is_16_00_utc() -> None:
    assert window_end(at("2026-03-10T15:59:00"), DAY, "local_midnight", 480) == at(
        "2026-03-10T16:00"
    )
    # bought exactly at local midnight: a whole day
    assert window_end(at("2026-03-10T16:00:00"), DAY, "local_midnight", 480) == at(
        "2026-03-11T16:00"
    )
    assert window_end(at("2026-03-10T16:00:01"), DAY, "local_midnight", 480) == at(
        "2026-03-11T16:00"
    )


def test_local_midnight_west_of_utc() -> None:
    # UTC-5: local midnight is 05:00 UTC; 04:59 UTC is 23:59 the evening before.
    assert window_end(at("2026-03-10T04:59:00"), DAY, "local_midnight", -300) == at(
        "2026-03-10T05:00"
    )
    assert window_end(at("2026-03-10T05:00:00"), DAY, "local_midnight", -300) == at(
        "2026-03-11T05:00"
    )


def test_midnight_rules_count_calendar_days_for_longer_passes() -> None:
    week = 7 * DAY
    # Tuesday 10:00: day 1 is Tuesday, day 7 ends at midnight between Monday and Tuesday.
    assert window_end(at("2026-03-10T10:00"), week, "utc_midnight") == at("2026-03-17")
    assert window_end(at("2026-03-10T00:00"), week, "utc_midnight") == at("2026-03-17")


def test_compressed_utc_midnight_ends_every_line_on_the_same_boundary() -> None:
    boundary = at("2026-03-10T12:00:30")  # a multiple of 30 s since the epoch
    starts = [boundary - timedelta(seconds=s) for s in (29.999, 17, 3.5, 0.001)]
    assert {window_end(s, 30, "utc_midnight") for s in starts} == {boundary}
    assert window_end(boundary, 30, "utc_midnight") == boundary + timedelta(seconds=30)


def test_compressed_local_midnight_scales_the_offset_like_the_day() -> None:
    # UTC+8 moves a real day's boundary 8 h (a third of a day) earlier; a 30 s "day" moves
    # 10 s earlier, so boundaries fall at :20 and :50.
    assert window_end(at("2026-03-10T12:00:05"), 30, "local_midnight", 480) == at(
        "2026-03-10T12:00:20"
    )
    assert window_end(at("2026-03-10T12:00:20"), 30, "local_midnight", 480) == at(
        "2026-03-10T12:00:50"
    )
    # a 10 s day at UTC-5 (-5/24 of it): boundaries 2.083333 s later than UTC's
    end = window_end(at("2026-03-10T12:00:01"), 10, "local_midnight", -300)
    assert end == at("2026-03-10T12:00:02.083333")


def test_epoch_variant_agrees_with_datetimes() -> None:
    for start, validity, reset, offset in [
        (at("2026-03-10T23:59:00"), DAY, "utc_midnight", 0),
        (at("2026-03-10T16:00:00"), DAY, "local_midnight", 480),
        (at("2026-03-10T12:00:05.25"), 30, "local_midnight", 480),
        (at("2026-03-10T12:00:05.25"), 30, "rolling", 0),
    ]:
        expected = window_end(start, validity, reset, offset).timestamp()
        assert window_end_epoch(start.timestamp(), validity, reset, offset) == pytest.approx(
            expected, abs=1e-6
        )


def test_the_simulated_carriers_own_rule_ends_every_window_where_ours_does() -> None:
    """The simulators read a window on their own (they share no code with the product);
    where the two readings part, one of them is wrong."""
    starts = [at("2026-03-10T23:59:00"), at("2026-03-11T00:00:00"), at("2026-03-10T12:00:05.25")]
    for start in starts:
        for validity in (1, 30, 3599, 3600, DAY - 1, DAY, 7 * DAY, DAY + 1):
            for reset in ("rolling", "utc_midnight", "local_midnight"):
                for offset in (-720, -300, 0, 330, 480, 840):
                    ours = window_end_epoch(start.timestamp(), validity, reset, offset)
                    theirs = carrier_windows.window_end_epoch(
                        start.timestamp(), validity, reset, offset
                    )
                    assert theirs == ours, (start, validity, reset, offset)


@pytest.mark.parametrize(
    ("validity", "reset", "offset"),
    [(DAY, "midnight", 0), (DAY, "local_midnight", 15 * 60), (0, "rolling", 0)],
)
def test_bad_rules_are_refused(validity: int, reset: str, offset: int) -> None:
    with pytest.raises(ValueError):
        window_end(at("2026-03-10T10:00"), validity, reset, offset)


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window_end(datetime(2026, 3, 10), DAY, "rolling")
