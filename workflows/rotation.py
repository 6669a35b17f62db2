"""The rotation core: every decision of a Balance, as pure functions of its state.

Nothing here knows Temporal. ``next_step`` reads the state and the time and says what the
workflow does next (order, switch, read usage, hand over, sleep until a moment...) and
why; the other functions apply what happened (a message, a carrier's answer) to the
state and return the ledger events it implies. ``workflows/balance.py`` is the shell that
runs the steps, so every rule of a rotation is tested here in milliseconds
(tests/workflows/test_rotation.py), without a server.

The moments (when to order, when to switch) are in ``workflows.timing``, the usage
projection in ``workflows.usage``; both are pure too.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime, timedelta
from typing import Any, Literal

from models import money
from models.payloads import (
    ARCHIVE_DEPTH,
    BalanceState,
    BalanceStatus,
    BalanceStatusView,
    EventRecord,
    Line,
    LineState,
    UsageReport,
)
from workflows import caps, timing, usage
from workflows.events import carrier_started, event, note

# Shortest wait between two attempts once a step has failed for good.
FAILING_BACKOFF = timedelta(seconds=30)
# Events noted by message handlers are written once this many wait, not only at a step.
PENDING_EVENTS_MAX = 50


class Do(enum.StrEnum):
    """What the workflow does next."""

    hand_over = "hand over"  # continue as new with the state
    record = "record"  # write the events messages have noted
    cancel = "cancel"  # end every line, then close as Cancelled
    pause = "pause"  # end every line, then wait for resume or cancel
    complete = "complete"  # the term is done: close as Completed
    bring_up = "bring up"  # no line is active: order one and activate it now
    end_term = "end term"  # the last line has ended: end it
    order = "order"  # order the next line
    switch = "switch"  # activate the scheduled line, then end the active one
    check_usage = "check usage"  # read the active line's usage at the carrier
    sleep = "sleep"  # until ``Step.until`` or a message


@dataclasses.dataclass(frozen=True)
class Step:
    """What the workflow does next (``do``), why, and until when it sleeps."""

    do: Do
    why: str = ""
    until: datetime | None = None
    # The day's cost cap has just been reached with the switch due by usage: the eSIM
    # stays on its line once used up, throttled or, where a used-up pass ends, with no
    # service (``throttle``), whatever the step.
    cap_reached: bool = False


@dataclasses.dataclass(frozen=True)
class Changes:
    """What an outcome changed beyond the state: lines and ledger events to write."""

    lines: list[Line] = dataclasses.field(default_factory=list)
    events: list[EventRecord] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Run:
    """What the core is told of the current run; not carried over to the next."""

    rotated: bool = False  # this run has switched lines
    brought_up: bool = False  # this run has brought a line up
    history_long: bool = False  # the run's history is near Temporal's limits
    suggested: bool = False  # Temporal suggests continuing as new


def next_step(s: BalanceState, now: datetime, run: Run) -> Step:
    """What to do next, and why."""
    if hands_over(s, run, "now"):
        return Step(Do.hand_over, "the run's work is done or its history long")
    if s.pending_events:
        return Step(Do.record, "messages noted events")
    if s.cancel_requested:
        return Step(Do.cancel)
    if s.paused:
        return Step(Do.pause)
    if s.active is None:
        if timing.term_done(s):
            return Step(Do.complete)
        return Step(Do.bring_up, "no line is active")
    capped = caps.newly_reached(s, now)
    if timing.is_last_line(s):
        if now >= timing.ends_at(s.active):
            return Step(Do.end_term, "term complete", cap_reached=capped)
    elif s.scheduled is None and timing.order_due(s, now):
        if hands_over(s, run, "order due"):
            return Step(Do.hand_over, "one rotation a run", cap_reached=capped)
        return Step(Do.order, f"order line {s.last_seq + 1}", cap_reached=capped)
    elif s.scheduled is not None and (reason := timing.switch_reason(s, now)):
        return Step(Do.switch, reason, cap_reached=capped)
    if s.usage_check_at is not None and now >= s.usage_check_at:
        return Step(Do.check_usage, cap_reached=capped)
    if hands_over(s, run, "asleep"):
        return Step(Do.hand_over, "Temporal suggests it", cap_reached=capped)
    until, what = wake_at(s, now, capped)
    return Step(Do.sleep, what, until=until, cap_reached=capped)


def hands_over(s: BalanceState, run: Run, moment: Literal["now", "order due", "asleep"]) -> bool:
    """When a run hands its state over to a new run: the one rule.

    - ``now``: its history has grown long with messages (a waiting balance takes any
      number of them); a line it brought up is active (the bring-up is the longest
      history a run has, and a fleet enrolled in a wave meets its first boundary as a
      herd: each balance's next wakes then replay a short run); or it has switched, for
      runs recorded when every rotation handed over at its switch.
    - ``order due``: it has rotated once. Handed over here rather than at the switch: at a
      reset boundary thousands of balances switch in one second, and a hand-over there
      would add a new run and its first workflow task to each of them. Orders are spread
      over the lead window, so the new runs are too.
    - ``asleep``: Temporal suggests it.

    The ``hand_over_*`` flags are each balance's patches (BalanceWorkflow.run): runs
    recorded before a rule existed replay without it.
    """
    if moment == "now":
        return bool(
            (s.hand_over_when_long and run.history_long)
            or (run.brought_up and s.active is not None and s.hand_over_after_bring_up)
            or (run.rotated and not s.hand_over_at_order)
        )
    if moment == "order due":
        return run.rotated
    return run.suggested


def piled_up(s: BalanceState, history_long: bool) -> bool:
    """Messages have piled up while the run waits: their events are to be written, or the
    history has grown long and the run is to hand over. A waiting balance (paused,
    failing, asleep) takes any number of messages, and still hears resume and cancel."""
    return bool(s.hand_over_when_long) and (
        len(s.pending_events) >= PENDING_EVENTS_MAX or history_long
    )


def wake_at(s: BalanceState, now: datetime, capping: bool = False) -> tuple[datetime, str]:
    """The next moment the workflow has something to do, and what (``capping``: the cap
    is reached as it goes to sleep)."""
    assert s.active is not None
    deadlines: list[tuple[datetime, str]] = []
    lifts = timing.cap_lifts_at(s, now, capping)
    if lifts is not None:
        deadlines.append((lifts, "the day's cost cap lifts"))
    if timing.is_last_line(s):
        deadlines.append((timing.ends_at(s.active), f"line {s.active.seq} ends (last line)"))
    elif s.scheduled is None:
        deadlines.append((timing.order_at(s), f"order line {s.last_seq + 1}"))
    else:
        deadlines.append((timing.switch_at(s), f"switch to line {s.scheduled.seq}"))
    if s.usage_check_at is not None:
        deadlines.append((s.usage_check_at, f"check usage of line {s.active.seq}"))
    return min(deadlines)


def order_deadline(s: BalanceState, now: datetime) -> datetime:
    """When an order still retrying shows the balance Failing: the switch time (in
    place, where the order is the switch, the switch's own deadline), or the bring-up's
    patience when no line is active."""
    if s.active is None:
        return timing.patience(s, now)
    return switch_deadline(s) if timing.in_place(s) else timing.switch_at(s)


def switch_deadline(s: BalanceState) -> datetime:
    """When a switch still retrying shows the balance Failing: the old line's end (plus
    the margin where the carrier switches at the line's end itself)."""
    assert s.active is not None
    deadline = timing.ends_at(s.active)
    if timing.carrier_switches(s):
        deadline += timedelta(seconds=s.policy.margin(s.active.validity_seconds))
    return deadline


@dataclasses.dataclass(frozen=True)
class SwitchPlan:
    """How a switch goes, by what the carrier does itself.

    ``confirm_only``: the carrier starts the new line by itself, so the workflow confirms
    it with a quick read (that starts it, should the carrier not have). ``old_ends``: how
    the old line ends: ``deactivate`` (we end it), ``at_its_end`` (its window ended it as
    the new one began), ``replaced`` (a product change in place replaced it when the new
    one took effect), ``used_up`` (the carrier ended it as its data ran out) or
    ``deactivate_first`` (we end it first, and the carrier starts the queued next line on
    attach: an operator's or the audit's switch at a queued carrier)."""

    confirm_only: bool
    old_ends: Literal["deactivate", "at_its_end", "replaced", "used_up", "deactivate_first"]


def switch_plan(s: BalanceState, reason: str) -> SwitchPlan:
    """In place, the change bought for the switch replaces the old line; an old line whose
    data ran out has ended at the carrier already (``timing.ended_used_up``), and a queued
    next one started then; at the line's end by time, the carrier switches itself where it
    can (``timing.carrier_switches``); otherwise we start the new line and end the old."""
    if timing.in_place(s):
        return SwitchPlan(confirm_only=True, old_ends="replaced")
    if timing.ended_used_up(s):
        # The carrier has ended the old line; a queued next one it has started on attach.
        queued = timing.next_starts_on_its_own(s)
        return SwitchPlan(confirm_only=queued, old_ends="used_up")
    if timing.carrier_switches(s) and reason == "time":
        return SwitchPlan(confirm_only=True, old_ends="at_its_end")
    if timing.carrier_switches_by_usage(s):
        # A queued pass starts on attach once the eSIM has no other: nothing is relied on
        # to start it early (eSIM Go has no such call), so the old line ends first.
        return SwitchPlan(confirm_only=True, old_ends="deactivate_first")
    return SwitchPlan(confirm_only=False, old_ends="deactivate")


def failing_backoff(s: BalanceState) -> timedelta:
    """The wait before the next attempt of a step the carrier refused for good. Short
    passes (compressed time) retry sooner, in proportion to their validity."""
    return min(FAILING_BACKOFF, timedelta(seconds=max(1.0, s.product.validity_seconds / 4)))


def view(s: BalanceState, now: datetime) -> BalanceStatusView:
    """The ``status`` query's answer: the stack of lines, usage, deadlines and flags."""
    active = s.active
    steering = active is not None and not timing.is_last_line(s)
    return BalanceStatusView(
        balance_id=s.balance_id,
        iccid=s.iccid,
        carrier=s.carrier,
        status=s.status,
        product_id=s.product.id,
        next_product_id=s.next_product.id if s.next_product else None,
        lines_total=s.lines_total,
        active=active,
        scheduled=s.scheduled,
        archived=s.archived,
        usage_fraction=usage.fraction(active) if active else None,
        order_at=timing.order_at(s) if steering else None,
        switch_at=timing.switch_at(s) if steering else None,
        usage_check_at=s.usage_check_at,
        paused=s.paused,
        capped=s.capped,
        failing_reason=s.failing_reason,
        rotations=s.rotations,
        early_rotations=s.early_rotations,
        lines_today=s.lines_today,
        cap_reached=timing.cap_reached(s, now),
        service=service(s),
        spend={c: money.amount(v) for c, v in sorted(s.spend_cents.items())},
        spend_today={
            c: money.amount(v)
            for c, v in sorted(s.spend_today_cents.items())
            if s.spend_day == now.date()
        },
    )


def service(s: BalanceState) -> Literal["high_speed", "throttled", "none"]:
    """What the eSIM has on its active line as far as the workflow knows: a used-up line
    serves at the throttled speed in place, and nothing where a used-up pass ends."""
    if s.active is None:
        return "none"
    if s.active.exhausted_at is None:
        return "high_speed"
    return "none" if timing.used_up_ends(s) else "throttled"


# --- usage ----------------------------------------------------------------------------


def take_usage(s: BalanceState, report: UsageReport, now: datetime) -> bool:
    """Take a usage observation of the active line and plan the next check from the rate.
    True if it was news (the workflow looks at its deadlines again)."""
    line = s.active
    if line is None or report.seq != line.seq or report.used_bytes < line.used_bytes:
        return False
    if report.reference is not None and report.reference != line.reference:
        return False
    last = line.usage_observed_at or line.activated_at
    # The earliest carrier time the allowance was seen used up: throttled from then on, or
    # ended where a used-up pass ends (a late-delivered 100 % report beats a later read).
    if report.used_bytes >= line.allowance_bytes and (
        line.exhausted_at is None or report.observed_at < line.exhausted_at
    ):
        line.exhausted_at = report.observed_at
        if timing.used_up_ends(s):
            # The carrier ended it then: it serves no more, not even throttled.
            line.ended_at = report.observed_at
    if last is not None and report.observed_at <= last:
        return False
    # A ``usage_threshold`` event per threshold this newer report crosses: usage only
    # grows, so each fires once per line.
    for percent in usage.crossed(line.used_bytes, report.used_bytes, line.allowance_bytes):
        note(
            s,
            "usage_threshold",
            now,
            actor="carrier",
            seq=line.seq,
            reference=line.reference,
            percent=percent,
            used_bytes=report.used_bytes,
            allowance_bytes=line.allowance_bytes,
            observed_at=report.observed_at.isoformat(),
        )
    line.prev_used_bytes, line.prev_observed_at = line.used_bytes, last
    line.used_bytes, line.usage_observed_at = report.used_bytes, report.observed_at
    # Webhooks fire only at 50/80/100 %: read usage ourselves when the projection says
    # the switch point is near.
    s.usage_check_at = usage.next_check(
        line, s.policy, now, timing.switch_at(s), timing.carrier_switches_by_usage(s)
    )
    return True


def usage_unread(s: BalanceState, now: datetime) -> None:
    """The carrier did not answer a usage read in time: try again a little later."""
    assert s.active is not None
    s.usage_check_at = now + timedelta(seconds=max(1.0, s.active.validity_seconds / 20))


# --- outcomes of the steps ------------------------------------------------------------


def ordered(s: BalanceState, seq: int, line: Line, now: datetime) -> Changes:
    """Line ``seq`` is bought: it is the scheduled line. A package someone had already
    ended at the carrier (adopted by the order) is passed over: the next order is due."""
    s.last_seq = seq
    caps.spent(s, line, now)
    if line.state not in (LineState.scheduled, LineState.active):
        return Changes([line], [event(s, "order_failed", now, line)])
    s.scheduled = line
    recovered(s, now)
    return Changes([line], [event(s, "ordered", now, line)])


def activation_refused(s: BalanceState, line: Line, now: datetime) -> Changes:
    """The carrier will never activate ``line``: drop it, the next order buys afresh."""
    failed = line.model_copy(update={"state": LineState.failed})
    s.scheduled = None
    archive(s, failed)
    return Changes([failed], [event(s, "activation_failed", now, failed)])


def ended_unconfirmed(s: BalanceState, line: Line, now: datetime) -> Changes:
    """``line`` ended at the carrier before we confirmed it (started by the carrier's
    safety net, say, and run out while its API was failing us)."""
    s.scheduled = None
    archive(s, line)
    events = [carrier_started(s, line)] if line.activated_at else []
    kind = line.state.value if line.activated_at else "activation_failed"
    events.append(event(s, kind, now, line, reason="ended before confirmed"))
    return Changes([line], events)


def confirmed(s: BalanceState, line: Line, now: datetime) -> None:
    """The carrier confirms ``line`` active: it counts against the day's cap."""
    day = (line.activated_at or now).date()
    if s.day != day:
        s.day, s.lines_today = day, 0
    s.lines_today += 1
    recovered(s, now)


def brought_up(s: BalanceState, active: Line, now: datetime) -> Changes:
    s.active, s.scheduled = active, None
    _adopt_product(s, active)
    s.status = BalanceStatus.Active
    return Changes([active], [event(s, "activated", now, active)])


def begin_switch(s: BalanceState) -> None:
    s.status = BalanceStatus.Rotating


def end_state(reason: str) -> LineState:
    """How the old line ends, by why it was switched away from."""
    return {"usage": LineState.exhausted, "operator": LineState.cancelled}.get(
        reason, LineState.expired
    )


def ended_by_carrier(plan: SwitchPlan, line: Line, new: Line, reason: str) -> Line:
    """The old line as the carrier ended it (no deactivation needed): at its window's end,
    when the new line replacing it in place took effect, or as its data ran out."""
    window = timing.ends_at(line)
    if plan.old_ends == "used_up" and line.exhausted_at is not None:
        ended_at = min(line.exhausted_at, window)
        return line.model_copy(update={"state": LineState.exhausted, "ended_at": ended_at})
    end = (window if plan.old_ends == "at_its_end" else new.activated_at) or window
    update: dict[str, Any] = {"state": end_state(reason), "ended_at": end}
    if end > window and (line.exhausted_at is None or line.exhausted_at > window):
        # Replaced in place after its window ran out: the device stayed on it, throttled.
        update["exhausted_at"] = window
    return line.model_copy(update=update)


def switched(s: BalanceState, active: Line, ended: Line, reason: str, now: datetime) -> Changes:
    s.active, s.scheduled = active, None
    archive(s, ended)
    _adopt_product(s, active)
    s.rotations += 1
    s.early_rotations += reason == "usage"
    s.rotate_requested = False
    s.capped = False
    s.usage_check_at = None
    s.status = BalanceStatus.Active
    return Changes(
        [ended, active],
        [
            event(s, "activated", now, active, reason=reason),
            event(s, ended.state.value, now, ended, reason=reason, **ending(ended)),
        ],
    )


REFUNDS = {
    "balance": "refunded to balance",
    "inventory": "returned to inventory",
    "none": "not refunded",
}


def ending(line: Line) -> dict[str, Any]:
    """What the carrier said it refunded when it ended ``line``, for the ledger event (none
    where it said nothing)."""
    if line.refund is None:
        return {}
    return {"refund": line.refund, "refunded": REFUNDS.get(line.refund, line.refund)}


def lines_ended(
    s: BalanceState, ended: list[tuple[Line, bool]], reason: str, now: datetime
) -> Changes:
    """The scheduled and active lines (``(line, was active)``) have ended at the carrier —
    but a line the carrier must not end (``left_on_esim``), which stays on the eSIM: a
    pause keeps it where it was, to be brought up on resume rather than bought again;
    otherwise it is archived as it stands. Either way the ledger says so."""
    events: list[EventRecord] = []
    keep = s.paused and not s.cancel_requested
    kept: dict[bool, Line] = {}
    for line, was_active in ended:
        if line.left_on_esim is not None:
            events.append(event(s, "left_on_esim", now, line, reason=reason, why=line.left_on_esim))
            if keep:
                kept[was_active] = line.model_copy(update={"left_on_esim": None})
            else:
                archive(s, line)
            continue
        if not was_active and line.activated_at is not None:
            # The carrier's safety net started it as the line before ended, perhaps
            # before our order's answer came back: its state may read either way.
            events.append(carrier_started(s, line))
        events.append(event(s, line.state.value, now, line, reason=reason, **ending(line)))
        archive(s, line)
    s.active, s.scheduled = kept.get(True), kept.get(False)
    s.usage_check_at = None
    return Changes([line for line, _ in ended], events)


def paused(s: BalanceState) -> None:
    s.status = BalanceStatus.Paused


def resumed(s: BalanceState) -> None:
    if not s.cancel_requested:
        s.status = BalanceStatus.Active


def failing(s: BalanceState, reason: str, now: datetime) -> Changes | None:
    """Show the balance as Failing, once per episode (None if it already is)."""
    if s.failing_reason is not None:
        return None
    s.failing_reason = reason
    s.status = BalanceStatus.Failing
    return Changes(events=[event(s, "failing", now, reason=reason)])


def recovered(s: BalanceState, now: datetime) -> None:
    if s.failing_reason is not None:
        note(s, "recovered", now, after=s.failing_reason)
        s.failing_reason = None
        s.status = BalanceStatus.Active


def closed(s: BalanceState, status: BalanceStatus, now: datetime) -> Changes:
    s.status = status
    return Changes(events=[event(s, status.value.lower(), now)])


def closed_meanwhile(s: BalanceState) -> None:
    """Enrolled again, the balance was found closed in the database: the run ends."""
    s.status = BalanceStatus.Cancelled


def restored(
    s: BalanceState,
    now: datetime,
    moved: list[Line] | None = None,
    started: list[int] | None = None,
) -> Changes:
    """The state rebuilt from the database and the carrier: say so; the lines adopted, and
    what the carrier did while no workflow ran (``moved``: lines the database held open
    that it started or ended; ``started``: the seqs it started), with their events."""
    note(
        s,
        "restored",
        now,
        last_seq=s.last_seq,
        active_seq=s.active.seq if s.active else None,
        scheduled_seq=s.scheduled.seq if s.scheduled else None,
    )
    events: list[EventRecord] = []
    for line in moved or []:
        if line.seq in (started or []) and line.activated_at is not None:
            events.append(carrier_started(s, line))
        if line.state not in (LineState.active, LineState.scheduled):
            why = "while no workflow ran"
            events.append(event(s, line.state.value, now, line, reason=why, **ending(line)))
    adopted = {line.seq: line for line in (s.active, s.scheduled) if line is not None}
    lines = [line for line in moved or [] if line.seq not in adopted]
    return Changes([*lines, *adopted.values()], events)


def archive(s: BalanceState, line: Line) -> None:
    s.archived = [*s.archived, line][-ARCHIVE_DEPTH:]


def _adopt_product(s: BalanceState, line: Line) -> None:
    if s.next_product is not None and s.next_product.id == line.product_id:
        s.product, s.next_product = s.next_product, None
