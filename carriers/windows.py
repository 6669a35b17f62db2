"""When a line's window ends: the product's reset rule applied to its activation time.

Rules (``Product.reset``):

- ``rolling``: the window lasts the validity from activation.
- ``utc_midnight``: the window ends at the next 00:00 UTC strictly after activation.
- ``local_midnight``: the same at the next local midnight of a fixed UTC offset
  (``utc_offset_minutes``, e.g. +480 for UTC+8, whose midnight is 16:00 UTC).

A pass bought exactly at a reset gets a whole day (the boundary must be *after* the
activation); one bought at 23:59 gets one minute. A midnight rule counts calendar days:
a 7-day pass ends at the 7th boundary, the day of activation being the first.

Products shorter than a day (the compressed-time ones of the simulators) treat their
validity as their day: boundaries fall at whole multiples of the validity since the Unix
epoch, so lines of a compressed ``utc_midnight`` product end in the same second wherever
they started (the midnight herd). The UTC offset is scaled the same way, as the same
fraction of the product's day: UTC+8 moves a 30 s product's boundaries 10 s earlier,
just as it moves a real day's boundary 8 h earlier. Times are exact to the microsecond.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

RESET_RULES = ("rolling", "utc_midnight", "local_midnight")
DAY_SECONDS = 86_400
MIN_OFFSET_MINUTES, MAX_OFFSET_MINUTES = -12 * 60, 14 * 60

_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def window_end(
    activated_at: datetime, validity_seconds: int, reset: str, utc_offset_minutes: int = 0
) -> datetime:
    """When a line activated at ``activated_at`` (timezone-aware) ends, in UTC."""
    if activated_at.tzinfo is None:
        raise ValueError("activated_at must be timezone-aware")
    start_us = (activated_at - _EPOCH) // timedelta(microseconds=1)
    end_us = _end_us(start_us, validity_seconds, reset, utc_offset_minutes)
    return _EPOCH + timedelta(microseconds=end_us)


def window_end_epoch(
    activated_at: float, validity_seconds: int, reset: str, utc_offset_minutes: int = 0
) -> float:
    """:func:`window_end` on epoch seconds (the simulators' clock)."""
    if reset == "rolling":
        check_reset(reset, utc_offset_minutes, validity_seconds)
        # Kept in float arithmetic: exactly what a rolling window always was.
        return activated_at + validity_seconds
    end_us = _end_us(round(activated_at * _US), validity_seconds, reset, utc_offset_minutes)
    return end_us / _US


def check_reset(reset: str, utc_offset_minutes: int = 0, validity_seconds: int = 1) -> None:
    """Raises ValueError unless this is a rule, offset and validity a product may have."""
    if reset not in RESET_RULES:
        raise ValueError(f"unknown reset rule {reset!r}; expected one of {RESET_RULES}")
    if not MIN_OFFSET_MINUTES <= utc_offset_minutes <= MAX_OFFSET_MINUTES:
        raise ValueError(f"UTC offset {utc_offset_minutes} min is outside -12 h..+14 h")
    if validity_seconds <= 0:
        raise ValueError("validity must be positive")


def _end_us(start_us: int, validity_seconds: int, reset: str, utc_offset_minutes: int) -> int:
    check_reset(reset, utc_offset_minutes, validity_seconds)
    if reset == "rolling":
        return start_us + validity_seconds * _US
    offset = utc_offset_minutes if reset == "local_midnight" else 0
    day = min(validity_seconds, DAY_SECONDS)
    days = -(-validity_seconds // day)
    day_us = day * _US
    # The offset as the same fraction of this product's day, rounded to the microsecond.
    shift_us = (2 * offset * 60 * _US * day + DAY_SECONDS) // (2 * DAY_SECONDS)
    first_boundary = ((start_us + shift_us) // day_us + 1) * day_us - shift_us
    return first_boundary + (days - 1) * day_us
