"""When a simulated package's window ends: the carrier's reset rule on epoch seconds.

The simulators' own reading of a pass's window, written apart from the product's (which
reads the carrier's answers): a mistake in one is then seen by the other, not shared.

- ``rolling``: the window lasts the validity from activation.
- ``utc_midnight``: it ends at the next 00:00 UTC strictly after activation.
- ``local_midnight``: the same at the next local midnight of a fixed UTC offset.

A midnight rule counts calendar days (a 7-day pass ends at the 7th boundary, the day of
activation being the first). A pass shorter than a day (the compressed-time products)
takes its validity as its day: boundaries fall at whole multiples of it since the epoch,
and the UTC offset moves them by the same fraction of that day. Microsecond exact.
"""

from __future__ import annotations

RESET_RULES = ("rolling", "utc_midnight", "local_midnight")
DAY_SECONDS = 86_400
MIN_OFFSET_MINUTES, MAX_OFFSET_MINUTES = -12 * 60, 14 * 60
_US = 1_000_000


def check_reset(reset: str, utc_offset_minutes: int = 0, validity_seconds: int = 1) -> None:
    """Raises ValueError unless a product may have this rule, offset and validity."""
    if reset not in RESET_RULES:
        raise ValueError(f"unknown reset rule {reset!r}; expected one of {RESET_RULES}")
    if not MIN_OFFSET_MINUTES <= utc_offset_minutes <= MAX_OFFSET_MINUTES:
        raise ValueError(f"UTC offset {utc_offset_minutes} min is outside -12 h..+14 h")
    if validity_seconds <= 0:
        raise ValueError("validity must be positive")


def window_end_epoch(
    activated_at: float, validity_seconds: int, reset: str, utc_offset_minutes: int = 0
) -> float:
    """The end (epoch seconds) of a window that opened at ``activated_at``."""
    check_reset(reset, utc_offset_minutes, validity_seconds)
    if reset == "rolling":
        return activated_at + validity_seconds
    offset_minutes = utc_offset_minutes if reset == "local_midnight" else 0
    day = min(validity_seconds, DAY_SECONDS)
    days = -(-validity_seconds // day)  # calendar days, rounded up
    day_us = day * _US
    # The offset as the same fraction of this product's day, to the nearest microsecond.
    shift_us = (2 * offset_minutes * 60 * _US * day + DAY_SECONDS) // (2 * DAY_SECONDS)
    start_us = round(activated_at * _US)
    first_boundary_us = ((start_us + shift_us) // day_us + 1) * day_us - shift_us
    return (first_boundary_us + (days - 1) * day_us) / _US
