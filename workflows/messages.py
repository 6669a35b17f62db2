"""What a Balance's signals and updates do to its state (pause, resume, cancel, rotate
now, the audit's notice, a change of product or policy), and why an update is refused.
Pure, as the rest of the rotation core: ``workflows/balance.py`` hears a message and
applies it here; the next step (``rotation.next_step``) acts on it."""

from __future__ import annotations

from datetime import datetime

from models import payloads
from models.payloads import (
    CLOSED_STATUSES,
    ActionRequest,
    AuditNotice,
    BalanceState,
    ChangePolicy,
    ChangeProduct,
    LineState,
    UsageReport,
)
from workflows import caps, timing
from workflows.events import note
from workflows.rotation import archive, take_usage


def pause(s: BalanceState, req: ActionRequest, now: datetime) -> None:
    if not s.paused:
        s.paused = True
        note(s, "paused", now, actor=req.actor, reason=req.reason)


def resume(s: BalanceState, req: ActionRequest, now: datetime) -> None:
    if s.paused:
        s.paused = False
        note(s, "resumed", now, actor=req.actor, reason=req.reason)


def cancel(s: BalanceState, req: ActionRequest, now: datetime) -> None:
    if not s.cancel_requested:
        s.cancel_requested = True
        note(s, "cancel_requested", now, actor=req.actor, reason=req.reason)


def rotate_now(s: BalanceState, req: ActionRequest, now: datetime) -> None:
    """Switch to a fresh line now, whatever the active one's time or usage; within the
    day's cost cap unless ``force``d (a line bought past it is refused, and said so)."""
    if s.active is None or s.paused or timing.is_last_line(s):
        return
    if s.rotate_within_cap and not req.force and timing.cap_reached(s, now):
        note(
            s,
            "rotate_refused",
            now,
            actor=req.actor,
            reason=req.reason,
            why="cost cap reached",
            max_lines_per_day=s.policy.max_lines_per_day,
            **caps.spend_figures(s, now),
        )
    else:
        s.rotate_requested = True
        note(s, "rotate_requested", now, actor=req.actor, reason=req.reason)


def audit(s: BalanceState, notice: AuditNotice, now: datetime) -> None:
    """The audit saw the carrier disagree: a scheduled line that has ended there is
    dropped (the next one is ordered when due, at once past the order time); an active
    one that has ended is rotated away from now, whatever the cap (the eSIM has no
    service) — unless its data ran out (``used_up``): that is a switch by usage, within
    the cap. Anything else only has the workflow look at its deadlines again."""
    if notice.kind != "ghost_line":
        return
    ref = notice.reference
    if s.scheduled is not None and s.scheduled.reference == ref:
        gone = s.scheduled.model_copy(update={"state": LineState.failed})
        s.scheduled = None
        archive(s, gone)
        note(s, "scheduled_dropped", now, actor=notice.actor, seq=gone.seq, reason=notice.reason)
    elif s.active is not None and s.active.reference == ref:
        if notice.used_up_at is not None and timing.used_up_ends(s):
            used_up(s, notice.used_up_at, now)
        if not timing.ended_used_up(s):
            request = ActionRequest(actor=notice.actor, reason=notice.reason, force=True)
            rotate_now(s, request, now)


def used_up(s: BalanceState, at: datetime, now: datetime) -> None:
    """The carrier ended the active line at ``at`` as its data ran out: its usage is the
    whole allowance from then on, and a switch by usage is due (``timing.ended_used_up``).
    It has nothing left to read."""
    line = s.active
    assert line is not None
    report = UsageReport(
        seq=line.seq, used_bytes=line.allowance_bytes, observed_at=at, reference=line.reference
    )
    take_usage(s, report, now)
    s.usage_check_at = None


def change_problem(s: BalanceState, restoring: bool) -> str | None:
    """Why an update cannot change this balance now, or None."""
    if restoring:
        return f"balance {s.balance_id} is being restored; try again shortly"
    if s.status in CLOSED_STATUSES or s.cancel_requested:
        return f"balance {s.balance_id} is closed"
    return None


def product_problem(s: BalanceState, req: ChangeProduct) -> str | None:
    if req.product.carrier != s.carrier:
        return (
            f"product {req.product.id} is sold by {req.product.carrier}, "
            f"but this eSIM is on {s.carrier}"
        )
    return None


def policy_problem(s: BalanceState, req: ChangePolicy) -> str | None:
    for product in filter(None, (s.product, s.next_product)):
        problem = payloads.policy_problem(req.policy, product.validity_seconds)
        if problem is not None:
            return problem
    return None


def change_product(s: BalanceState, req: ChangeProduct, now: datetime) -> None:
    """Use another product of the same carrier from the next line ordered on."""
    s.next_product = None if req.product.id == s.product.id else req.product
    note(s, "product_changed", now, actor=req.actor, product_id=req.product.id)


def change_policy(s: BalanceState, req: ChangePolicy, now: datetime) -> None:
    """Rotate by another policy from now on; the next order and switch times follow it."""
    s.policy = req.policy
    detail = req.policy.model_dump(mode="json", exclude_none=True)
    note(s, "policy_changed", now, actor=req.actor, policy=detail)
