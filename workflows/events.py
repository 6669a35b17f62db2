"""A Balance's ledger events, as the rotation core makes them: each keyed by the balance's
own count, so that writing it is idempotent, and written with the next store call."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models.payloads import BalanceState, EventRecord, Line


def event(
    s: BalanceState,
    kind: str,
    at: datetime,
    line: Line | None = None,
    *,
    actor: str = "workflow",
    seq: int | None = None,
    **detail: Any,
) -> EventRecord:
    """A ledger event, keyed by the balance's own count so that writing it is idempotent."""
    s.event_counter += 1
    if line is not None:
        detail = {"line_id": line.line_id, "reference": line.reference, **detail}
        seq = line.seq
    return EventRecord(
        key=f"{s.balance_id}:{s.event_counter}",
        balance_id=s.balance_id,
        seq=seq,
        kind=kind,
        actor=actor,
        at=at,
        detail=detail,
    )


def note(s: BalanceState, kind: str, at: datetime, **kwargs: Any) -> None:
    """An event written with the next store call (from a message, or noticed in passing)."""
    s.pending_events.append(event(s, kind, at, **kwargs))


def carrier_started(s: BalanceState, line: Line) -> EventRecord:
    """The carrier activated ``line`` on its own, at the time it says."""
    assert line.activated_at is not None
    return event(
        s, "activated", line.activated_at, line, actor="carrier", reason="started by the carrier"
    )
