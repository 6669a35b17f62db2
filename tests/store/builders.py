"""What a workflow step hands to ``record_changes``: a balance, its lines, their events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from models.identifiers import make_iccid
from models.payloads import (
    BalanceRecord,
    BalanceStatus,
    EventRecord,
    Line,
    LineState,
    RecordChanges,
)

PRODUCT = "telna-compressed-60s"


def new_balance() -> tuple[str, str]:
    """A fresh (balance id, ICCID)."""
    return f"bal_{uuid.uuid4().hex[:12]}", make_iccid(f"8944{uuid.uuid4().int % 10**14:014d}")


def line(balance_id: str, seq: int, state: LineState = LineState.scheduled) -> Line:
    ordered = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=seq)
    active = state is not LineState.scheduled
    return Line(
        seq=seq,
        reference=f"{balance_id}:{seq}",
        product_id=PRODUCT,
        carrier_product_id="compressed-60s",
        allowance_bytes=10**9,
        validity_seconds=60,
        state=state,
        line_id=f"pkg-{balance_id}-{seq}",
        ordered_at=ordered,
        activated_at=ordered + timedelta(seconds=5) if active else None,
        ends_at=ordered + timedelta(seconds=65) if active else None,
    )


def event(balance_id: str, seq: int, kind: str) -> EventRecord:
    at = datetime(2030, 1, 1, tzinfo=UTC) + timedelta(minutes=seq)
    return EventRecord(
        key=f"{balance_id}:{seq}:{kind}",
        balance_id=balance_id,
        seq=seq,
        kind=kind,
        actor="workflow",
        at=at,
        detail={"seq": seq},
    )


def changes(
    balance_id: str,
    iccid: str,
    lines: list[Line],
    events: list[EventRecord],
    status: BalanceStatus = BalanceStatus.Active,
    rotations: int = 0,
    revision: int = 0,
) -> RecordChanges:
    last = lines[-1] if lines else None
    return RecordChanges(
        balance_id=balance_id,
        iccid=iccid,
        carrier="telna",
        balance=BalanceRecord(
            balance_id=balance_id,
            status=status,
            product_id=PRODUCT,
            line_seq=last.seq if last else None,
            line_ends_at=last.ends_at if last else None,
            rotations=rotations,
            closed=status in (BalanceStatus.Cancelled, BalanceStatus.Completed),
            revision=revision,
        ),
        lines=lines,
        events=events,
    )
