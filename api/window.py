"""The window a read of continuity figures covers: ``since`` as asked, else the last day.

Figures over a window read only that window's rows of the ledger (``models.ledger_window``),
so a read costs what the window holds, not the whole history.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Query

from api.errors import ApiError
from models.continuity import DEFAULT_WINDOW

# An ISO 8601 date-time, offset optional; never a bare number (which a lenient parser
# would read as seconds since 1970).
SINCE_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?$"
)
WINDOW_HOURS = int(DEFAULT_WINDOW.total_seconds() // 3600)

SinceQuery = Annotated[
    str | None,
    Query(
        max_length=40,
        pattern=SINCE_PATTERN,
        description=(
            "ISO 8601 date-time; only time after it is measured (no offset: UTC). "
            f"Omitted: {WINDOW_HOURS} hours before now"
        ),
        examples=["2026-11-26T00:00:00Z"],
        json_schema_extra={"format": "date-time"},
    ),
]


def window_start(value: str | None, now: datetime) -> datetime:
    """``value`` as a UTC time, or ``DEFAULT_WINDOW`` before ``now`` without one."""
    return parse_since(value) or now - DEFAULT_WINDOW


def default_start(now: datetime) -> datetime:
    """Where the window starts when none is asked for (the dashboard's)."""
    return window_start(None, now)


def parse_since(value: str | None) -> datetime | None:
    """``value`` as a UTC time (a time without offset is taken as UTC); 422 if it names
    no real moment (a 30th of February, an hour 24, beyond the calendar in UTC)."""
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value)
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    except (ValueError, OverflowError) as error:
        raise ApiError(422, "invalid_request", f"query.since: {error}") from None
