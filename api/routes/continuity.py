"""The fleet's continuity report: gap, throttled and overlap seconds, rotations."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import ReaderDep, SessionDep
from api.errors import documented
from api.window import SinceQuery, window_start
from models.continuity import FleetContinuity, load_fleet_continuity

router = APIRouter(prefix="/v1/continuity", tags=["continuity"])


@router.get("", responses=documented(401, 403, 422))
def get_continuity(_: ReaderDep, session: SessionDep, since: SinceQuery = None) -> FleetContinuity:
    """Gap, throttled and overlap seconds and rotations of the fleet, per carrier."""
    now = datetime.now(UTC)
    return load_fleet_continuity(session, now, window_start(since, now))
