"""Liveness."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

router = APIRouter(tags=["operations"])


class Health(BaseModel):
    status: str


@router.get("/healthz")
async def healthz() -> Health:
    """Liveness: the process answers."""
    return Health(status="ok")
