"""The fleet's continuity report: gap, throttled and overlap seconds, rotations."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import ReaderDep, SessionDep
from api.errors import ApiError, documented
from models.continuity import FleetContinuity, load_fleet_continuity

router = APIRouter(prefix="/v1/continuity", tags=["continuity"])

# An ISO 8601 date-time, offset optional; never a bare number (which a lenient parser
# would read as seconds since 1970).
SINCE_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?"
    r"([Zz]|[+-][0-9]{2}:?[0-9]{2})?$"
)


@router.get("", responses=documented(401, 403, 422))
def get_continuity(
    _: ReaderDep,
    session: SessionDep,
    since: Annotated[
        str | None,
        Query(
            max_length=40,
            pattern=SINCE_PATTERN,
            description="ISO 8601 date-time; only time after it is measured (no offset: UTC)",
            examples=["2026-11-26T00:00:00Z"],
            json_schema_extra={"format": "date-time"},
        ),
    ] = None,
) -> FleetContinuity:
    """Gap, throttled and overlap seconds and rotations of the fleet, per carrier."""
    return load_fleet_continuity(session, datetime.now(UTC), parse_since(since))


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
