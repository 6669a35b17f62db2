"""BalanceWorkflow: one per Balance, id ``balance-{iccid}``; chains carrier passes.

Make before break: the next line is ordered ``lead`` before the active one ends, and
activated ``margin`` before it ends; only once the carrier confirms it active is the old
line deactivated. Usage moves both moments earlier (pre-order / switch thresholds)
unless the balance's cost cap for the UTC day is reached. After each rotation (when the
next order falls due, not at the switch), and once a line brought up (first line,
resume) is active, the workflow continues as new with its state, so a run's history
stays small.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.audit_restart import RestoreActivities
    from activities.carrier import CarrierActivities
    from activities.store import StoreActivities
    from models import search
    from models.payloads import (
        ARCHIVE_DEPTH,
        CLOSED_STATUSES,
        ActionRequest,
        AuditNotice,
        BalanceRecord,
        BalanceState,
        BalanceStatus,
        BalanceStatusView,
        ChangePolicy,
        ChangeProduct,
        EventRecord,
        Line,
        LineCommand,
        LineState,
        OrderLineInput,
        RecordChanges,
        RestoreBalance,
        RestoredBalance,
        UsageReport,
    )
    from workflows import timing, usage

CARRIER_CALL = timedelta(seconds=30)
# Carrier activities heartbeat while a call runs: a dead worker's attempt is retried
# after this, not after CARRIER_CALL. Not shorter: at a boundary a busy worker's
# heartbeats lag by seconds, and an attempt timed out while it still runs is done twice
# (the 10,000 herd retried 5,655 orders after a heartbeat timeout at 5 s, 0 and 27 at 15 s).
CARRIER_HEARTBEAT = timedelta(seconds=15)
STORE_CALL = timedelta(seconds=30)
STORE_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))
# Shortest wait between two attempts once a step has failed for good.
FAILING_BACKOFF = timedelta(seconds=30)
# A clock this far behind a timer it has seen fire is stale, not rounded (see _now).
STALE_CLOCK = timedelta(milliseconds=10)
# The patch behind a run's hand-over once a line it brought up is active (see run).
HAND_OVER_AFTER_BRING_UP = "hand-over-after-bring-up"
# The patch behind a rotated run's hand-over when the next order falls due (see run).
HAND_OVER_AT_ORDER = "hand-over-at-order"
# The patch behind every wait's hand-over once messages have piled up (see _piled_up).
HAND_OVER_WHEN_LONG = "hand-over-when-long"
# The patch behind an operator rotation that respects the cost cap unless forced.
ROTATE_WITHIN_CAP = "rotate-within-cap"
# A waiting run hands over at this many history events (or bytes). Temporal refuses a
# run's 10,001st signal, and cannot close a run while signals keep coming: under a flood
# each attempt to hand over fails, and the signals since the last completed workflow task
# pile into the next one. Handing over near the limit, not at Temporal's suggestion
# (4,096), keeps that pile to the last 2,000 or so, a task a loaded worker can run.
HISTORY_EVENTS_MAX = 8_000
HISTORY_BYTES_MAX = 8 * 1024 * 1024
# Events noted by message handlers are written once this many wait, not only at a step.
PENDING_EVENTS_MAX = 50


@workflow.defn
class BalanceWorkflow:
    """A Balance: one eSIM kept on high speed by a chain of Balance Lines."""

    @workflow.init
    def __init__(self, state: BalanceState) -> None:
        self.s = state
        self._wake = False
        self._published: dict[str, Any] = {}
        self._timers: dict[datetime, asyncio.Future[None]] = {}
        # This run has switched lines: it hands over before its next order.
        self._rotated = False
        # The latest moment a fired timer proves has passed (see _now).
        self._floor: datetime | None = None
        # Messages that came while the state was being restored (see _restore).
        self._restoring = False
        self._held: list[Callable[[], None]] = []

    @workflow.run
    async def run(self, state: BalanceState) -> BalanceStatusView:
        s = self.s
        if s.hand_over_after_bring_up is None:
            # Decided once per balance, in its first workflow task, and carried on: runs
            # recorded before the hand-over replay without it. Asked before any local
            # activity: a patch asked after one can land in another workflow task than
            # its marker (a query that splits the task), and then not replay.
            s.hand_over_after_bring_up = workflow.patched(HAND_OVER_AFTER_BRING_UP)
        if not s.hand_over_at_order:
            # Asked in each run's first workflow task until True, then carried: a run
            # recorded when every rotation handed over at its switch replays that way,
            # and the balance's next run takes the new way.
            s.hand_over_at_order = workflow.patched(HAND_OVER_AT_ORDER)
        if not s.hand_over_when_long:
            # As above: a run recorded before every wait could hand over replays without.
            s.hand_over_when_long = workflow.patched(HAND_OVER_WHEN_LONG)
        if not s.rotate_within_cap:
            s.rotate_within_cap = workflow.patched(ROTATE_WITHIN_CAP)
        if s.restore:
            if not await self._restore():
                return self.status()
            s = self.s
        self._describe()
        while True:
            if s.hand_over_when_long and self._history_is_long():
                await self._continue_as_new()
            if s.pending_events:
                # With the active line: usage events change its usage and exhaustion.
                await self._record(lines=[s.active] if s.active else None)
            if s.cancel_requested:
                await self._end_all_lines(LineState.cancelled, "cancelled")
                return await self._close(BalanceStatus.Cancelled)
            if s.paused:
                await self._pause()
                continue
            if s.active is None:
                if timing.term_done(s):
                    return await self._close(BalanceStatus.Completed)
                await self._bring_up_line()
                if s.active is not None and s.hand_over_after_bring_up:
                    # The bring-up (order, activation polls, Failing marks) is the
                    # longest history a run has. Handing over here, a balance's next
                    # wakes (the order, the switch) replay a short run instead: a fleet
                    # enrolled in a wave meets its first boundary as a herd, and a
                    # worker that no longer caches those balances replays each one.
                    await self._continue_as_new()
                continue
            now = self._now()
            self._note_cap(now)
            if timing.is_last_line(s):
                if now >= timing.ends_at(s.active):
                    await self._end_all_lines(LineState.expired, "term complete")
                    continue
            elif s.scheduled is None and timing.order_due(s, now):
                if self._rotated:
                    # One rotation a run, handed over here rather than at the switch.
                    # At a reset boundary thousands of balances switch in one second;
                    # a hand-over there would add a new run and its first workflow task
                    # to each of them. Orders are spread over the lead window, so the
                    # new runs are too, and the switch is the middle of a short run.
                    await self._continue_as_new()
                await self._order_next()
                continue
            elif s.scheduled is not None and timing.switch_reason(s, now):
                if await self._switch():
                    if not s.hand_over_at_order:
                        await self._continue_as_new()
                    self._rotated = True
                continue
            if s.usage_check_at is not None and now >= s.usage_check_at:
                await self._check_usage()
                continue
            if workflow.info().is_continue_as_new_suggested():
                await self._continue_as_new()
            await self._sleep_until_next_deadline(now)

    async def _restore(self) -> bool:
        """Enrolled again once its workflow was gone (terminated by hand, say): continue
        from the database and the carrier, never from seq 1. The new state holds the
        lines the carrier has, numbers the next order after every seq ever seen, and
        goes on with the ledger's numbering. Messages that came meanwhile are applied to
        it. False if the balance has closed meanwhile: the run ends."""
        s = self.s
        self._restoring = True
        restored: RestoredBalance = await workflow.execute_activity_method(
            RestoreActivities.restore_balance,
            RestoreBalance(balance_id=s.balance_id),
            start_to_close_timeout=CARRIER_CALL,
            retry_policy=timing.carrier_retry(s),
            summary=f"continue from the database and the lines at {s.carrier}",
        )
        self._restoring = False
        if restored.state is None:
            s.status = BalanceStatus.Cancelled
            self._publish()
            return False
        restored.state.hand_over_after_bring_up = s.hand_over_after_bring_up
        restored.state.hand_over_at_order = s.hand_over_at_order
        restored.state.hand_over_when_long = s.hand_over_when_long
        restored.state.rotate_within_cap = s.rotate_within_cap
        self.s = restored.state
        held, self._held = self._held, []
        for message in held:
            message()
        new = self.s
        adopted = [line for line in (new.active, new.scheduled) if line is not None]
        self._note_event(
            "restored",
            "workflow",
            last_seq=new.last_seq,
            active_seq=new.active.seq if new.active else None,
            scheduled_seq=new.scheduled.seq if new.scheduled else None,
        )
        await self._record(lines=adopted)
        return True

    def _held_back(self, message: Callable[[], None]) -> bool:
        """While the state is being restored, keep ``message`` for the restored state."""
        if self._restoring:
            self._held.append(message)
        return self._restoring

    async def _continue_as_new(self) -> None:
        """Hand the state over to a new run, once every message handler has finished."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.s)

    # --- signals ----------------------------------------------------------------------

    @workflow.signal
    def usage_reported(self, report: UsageReport) -> None:
        """The carrier (webhook or poller) saw this many bytes used on line ``seq``."""
        if not self._held_back(lambda: self.usage_reported(report)):
            self._apply_usage(report)

    @workflow.signal
    def pause(self, req: ActionRequest) -> None:
        """Suspend the eSIM: end its lines at the carrier until ``resume``."""
        if self._held_back(lambda: self.pause(req)):
            return
        if not self.s.paused:
            self.s.paused = True
            self._note_event("paused", req.actor, reason=req.reason)
        self._wake = True

    @workflow.signal
    def resume(self, req: ActionRequest) -> None:
        """Bring a paused eSIM back on a fresh line."""
        if self._held_back(lambda: self.resume(req)):
            return
        if self.s.paused:
            self.s.paused = False
            self._note_event("resumed", req.actor, reason=req.reason)
        self._wake = True

    @workflow.signal
    def cancel(self, req: ActionRequest) -> None:
        """End the balance: every line is ended at the carrier, the workflow completes."""
        if self._held_back(lambda: self.cancel(req)):
            return
        if not self.s.cancel_requested:
            self.s.cancel_requested = True
            self._note_event("cancel_requested", req.actor, reason=req.reason)
        self._wake = True

    @workflow.signal
    def rotate_now(self, req: ActionRequest) -> None:
        """Switch to a fresh line now, whatever the active one's time or usage; within the
        day's cost cap unless ``force``d (a line bought past it is refused, and said so)."""
        if self._held_back(lambda: self.rotate_now(req)):
            return
        s = self.s
        if s.active is not None and not s.paused and not timing.is_last_line(s):
            if s.rotate_within_cap and not req.force and timing.cap_reached(s, self._now()):
                self._note_event(
                    "rotate_refused",
                    req.actor,
                    reason=req.reason,
                    why="cost cap reached",
                    max_lines_per_day=s.policy.max_lines_per_day,
                )
            else:
                s.rotate_requested = True
                self._note_event("rotate_requested", req.actor, reason=req.reason)
        self._wake = True

    @workflow.signal
    def audit(self, notice: AuditNotice) -> None:
        """The audit saw the carrier disagree: a scheduled line that has ended there is
        dropped (the next one is ordered when due, at once past the order time); an
        active one that has ended is rotated away from now; anything else just wakes the
        workflow to look at its deadlines again."""
        if self._held_back(lambda: self.audit(notice)):
            return
        s = self.s
        ref = notice.reference
        if notice.kind == "ghost_line" and s.scheduled is not None and s.scheduled.reference == ref:
            gone = s.scheduled.model_copy(update={"state": LineState.failed})
            s.scheduled = None
            self._archive(gone)
            self._note_event("scheduled_dropped", notice.actor, seq=gone.seq, reason=notice.reason)
        elif notice.kind == "ghost_line" and s.active is not None and s.active.reference == ref:
            # The carrier has ended it: the eSIM has no service, whatever the cap says.
            self.rotate_now(ActionRequest(actor=notice.actor, reason=notice.reason, force=True))
        self._wake = True

    # --- updates ----------------------------------------------------------------------

    @workflow.update
    def change_product(self, req: ChangeProduct) -> BalanceStatusView:
        """Use another product of the same carrier from the next line ordered on."""
        s = self.s
        s.next_product = None if req.product.id == s.product.id else req.product
        self._note_event("product_changed", req.actor, product_id=req.product.id)
        self._wake = True
        return self.status()

    @change_product.validator
    def _validate_change_product(self, req: ChangeProduct) -> None:
        s = self.s
        if self._restoring:
            raise ValueError(f"balance {s.balance_id} is being restored; try again shortly")
        if s.status in CLOSED_STATUSES or s.cancel_requested:
            raise ValueError(f"balance {s.balance_id} is closed")
        if req.product.carrier != s.carrier:
            raise ValueError(
                f"product {req.product.id} is sold by {req.product.carrier}, "
                f"but this eSIM is on {s.carrier}"
            )

    @workflow.update
    def change_policy(self, req: ChangePolicy) -> BalanceStatusView:
        """Rotate by another policy from now on; the next order and switch times follow it."""
        self.s.policy = req.policy
        detail = req.policy.model_dump(mode="json", exclude_none=True)
        self._note_event("policy_changed", req.actor, policy=detail)
        self._wake = True
        return self.status()

    @change_policy.validator
    def _validate_change_policy(self, req: ChangePolicy) -> None:
        s = self.s
        if self._restoring:
            raise ValueError(f"balance {s.balance_id} is being restored; try again shortly")
        if s.status in CLOSED_STATUSES or s.cancel_requested:
            raise ValueError(f"balance {s.balance_id} is closed")
        for product in filter(None, (s.product, s.next_product)):
            problem = timing.policy_problem(req.policy, product.validity_seconds)
            if problem is not None:
                raise ValueError(problem)

    # --- queries ----------------------------------------------------------------------

    @workflow.query
    def status(self) -> BalanceStatusView:
        """The stack of lines (active, scheduled, archived), usage, deadlines and flags."""
        s = self.s
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
            cap_reached=timing.cap_reached(s, self._now()),
        )

    # --- the steps of a rotation ------------------------------------------------------

    async def _order_next(self) -> bool:
        """Order line ``last_seq + 1``; on success it becomes the scheduled line."""
        s = self.s
        seq = s.last_seq + 1
        product = s.next_product or s.product
        handle = workflow.start_activity_method(
            CarrierActivities.order_line,
            OrderLineInput(
                balance_id=s.balance_id,
                iccid=s.iccid,
                carrier=s.carrier,
                seq=seq,
                product=product,
                start_at=timing.safety_net_start(s) if s.active else None,
            ),
            start_to_close_timeout=CARRIER_CALL,
            heartbeat_timeout=CARRIER_HEARTBEAT,
            retry_policy=timing.carrier_retry(s),
            summary=f"order line {seq} ({product.id}) at {s.carrier}",
        )
        deadline = timing.switch_at(s) if s.active else timing.patience(s, self._now())
        try:
            line: Line = await self._watch(handle, deadline, f"ordering line {seq}")
        except ActivityError as error:
            await self._failing(f"ordering line {seq} failed: {_cause(error)}")
            return False
        s.last_seq = seq
        if line.state not in (LineState.scheduled, LineState.active):
            # Adopted a package someone already ended at the carrier: move past it.
            await self._record(lines=[line], events=[self._event("order_failed", line)])
            return False
        s.scheduled = line
        self._recovered()
        await self._record(lines=[line], events=[self._event("ordered", line)])
        return True

    async def _activate(
        self, line: Line, deadline: datetime, confirm_only: bool = False
    ) -> Line | None:
        """Activate ``line`` and wait for the carrier to confirm it; None if it failed.

        ``confirm_only``: the carrier has started the line by itself (a queued start at
        a reset boundary), so this is a read that is safe to repeat: a local activity
        (one marker event, no extra workflow task) instead of a scheduled one."""
        s = self.s
        summary = f"activate line {line.seq} at {s.carrier}, wait for confirmation"
        command = LineCommand(carrier=s.carrier, iccid=s.iccid, line=line)
        what = f"activating line {line.seq}"
        try:
            active = await self._confirm_started(command, deadline, what) if confirm_only else None
            if active is None:
                handle = workflow.start_activity_method(
                    CarrierActivities.activate_line,
                    command,
                    start_to_close_timeout=CARRIER_CALL,
                    heartbeat_timeout=CARRIER_HEARTBEAT,
                    retry_policy=timing.activation_retry(s),
                    summary=summary,
                )
                active = await self._watch(handle, deadline, what)
        except ActivityError as error:
            # Only non-retryable errors end the activity: the carrier will never activate
            # this package. Drop it and order afresh.
            failed = line.model_copy(update={"state": LineState.failed})
            s.scheduled = None
            self._archive(failed)
            event = self._event("activation_failed", failed)
            await self._record(lines=[failed], events=[event])
            await self._failing(f"activating line {line.seq} failed: {_cause(error)}")
            return None
        if active.state != LineState.active:
            # It ended at the carrier before we confirmed it (e.g. started by the carrier's
            # safety net and run out while the carrier's API was failing us).
            s.scheduled = None
            self._archive(active)
            events = [self._carrier_activated(active)] if active.activated_at else []
            kind = active.state.value if active.activated_at else "activation_failed"
            events.append(self._event(kind, active, reason="ended before confirmed"))
            await self._record(lines=[active], events=events)
            await self._set_failing(f"line {line.seq} ended at the carrier before confirmation")
            return None
        self._count_line_today(active)
        self._recovered()
        return active

    async def _confirm_started(
        self, command: LineCommand, deadline: datetime, what: str
    ) -> Line | None:
        """Confirm a line the carrier has started by itself with a quick read in a local
        activity; None if that did not confirm it, so the scheduled activity takes over.

        A local activity holds its workflow task, and the worker's workflow task slot with
        it, for as long as it runs. Polling a carrier that is slow to start the line (a
        line ordered after the boundary takes the carrier's activation latency) must not
        hold it: in the 10,000 herd such balances held every slot (24 there) and
        stalled the rest. So the local read gives up after six tries in about 4 s
        (``timing.confirm_retry``: under the 10 s workflow task timeout, so the task is
        not heartbeated either), and on any failure the scheduled activity, which polls
        without holding a slot, reads again and decides."""
        handle = workflow.start_local_activity_method(
            CarrierActivities.activate_line,
            command,
            start_to_close_timeout=CARRIER_CALL,
            retry_policy=timing.confirm_retry(self.s),
            summary=f"confirm line {command.line.seq} started at {self.s.carrier}",
        )
        try:
            line: Line = await self._watch(handle, deadline, what)
        except (ActivityError, ApplicationError, TimeoutError):
            # A local activity's last failure comes as it was raised, not as an
            # ActivityError.
            return None
        return line

    async def _watch(self, handle: ActivityHandle[Line], deadline: datetime, what: str) -> Line:
        """Await a carrier activity that retries until the carrier answers; should it still
        be retrying at ``deadline``, show the balance as Failing meanwhile.

        The activity is not abandoned and restarted for being slow: a carrier that fails
        for hours is retried by the same activity. Only a run whose history has grown
        long with messages meanwhile cancels it and hands over; the next run takes the
        step up again, and an order attempt still in flight buys nothing twice (its
        claim, activities/claims.py).
        """
        timer = self._timer(deadline, f"{what}: Failing if not done by {deadline:%H:%M:%SZ}")
        failing = False

        def moved() -> bool:
            return handle.done() or (timer.done() and not failing) or self._piled_up()

        while True:
            await workflow.wait_condition(moved)
            if handle.done():
                break
            if timer.done() and not failing:
                await self._set_failing(f"{what} still failing at {deadline:%H:%M:%SZ}")
                failing = True
            else:
                await self._relieve(handle)
        if not failing and not self._next_deadline_is(deadline):
            timer.cancel()
            self._timers.pop(deadline, None)
        return await handle

    async def _deactivate(self, line: Line, end_state: LineState) -> Line:
        """End ``line`` at the carrier; retried until the carrier confirms."""
        s = self.s
        ended: Line = await workflow.execute_activity_method(
            CarrierActivities.deactivate_line,
            LineCommand(carrier=s.carrier, iccid=s.iccid, line=line, end_state=end_state),
            start_to_close_timeout=CARRIER_CALL,
            heartbeat_timeout=CARRIER_HEARTBEAT,
            retry_policy=timing.carrier_retry(s),
            summary=f"deactivate line {line.seq} at {s.carrier} ({end_state.value})",
        )
        return ended

    async def _bring_up_line(self) -> None:
        """No line is active (first line, or after resume): order one and activate it now."""
        s = self.s
        if s.scheduled is None and not await self._order_next():
            return
        assert s.scheduled is not None
        active = await self._activate(s.scheduled, timing.patience(s, self._now()))
        if active is None:
            return
        s.active, s.scheduled = active, None
        self._adopt_product(active)
        s.status = BalanceStatus.Active
        await self._record(lines=[active], events=[self._event("activated", active)])

    async def _switch(self) -> bool:
        """Activate the scheduled line, then end the active one. True once switched."""
        s = self.s
        old, new = s.active, s.scheduled
        assert old is not None and new is not None
        now = self._now()
        reason = timing.switch_reason(s, now)
        deadline = timing.ends_at(old)
        # At a reset boundary the carrier has already made the switch: the queued start
        # began the new line as the boundary ended the old one. Confirming it is one quick
        # read, done as a local activity inside this workflow task, and the old line needs
        # no deactivation. Rotating would never be seen, so it is not published.
        at_boundary = s.product.reset != "rolling" and reason == "time"
        if at_boundary:
            s.status = BalanceStatus.Rotating
        else:
            self._set_status(BalanceStatus.Rotating)
        if s.product.reset != "rolling":  # switching at the boundary itself: allow a margin
            deadline += timedelta(seconds=s.policy.margin(old.validity_seconds))
        active = await self._activate(new, deadline, confirm_only=at_boundary)
        if active is None:
            return False
        end_state = {
            "usage": LineState.exhausted,
            "operator": LineState.cancelled,
        }.get(reason, LineState.expired)
        if at_boundary:
            ended = old.model_copy(update={"state": end_state, "ended_at": timing.ends_at(old)})
        else:
            ended = await self._deactivate(old, end_state)
        s.active, s.scheduled = active, None
        self._archive(ended)
        self._adopt_product(active)
        s.rotations += 1
        s.early_rotations += reason == "usage"
        s.rotate_requested = False
        s.capped = False
        s.usage_check_at = None
        s.status = BalanceStatus.Active
        await self._record(
            lines=[ended, active],
            events=[
                self._event("activated", active, reason=reason),
                self._event(end_state.value, ended, reason=reason),
            ],
        )
        return True

    async def _pause(self) -> None:
        """End every line at the carrier and wait for resume or cancel."""
        s = self.s
        await self._end_all_lines(LineState.cancelled, "paused")
        self._set_status(BalanceStatus.Paused)
        await self._record()
        while True:
            await workflow.wait_condition(
                lambda: not s.paused or s.cancel_requested or self._piled_up(),
                timeout_summary="paused until resume or cancel",
            )
            if not s.paused or s.cancel_requested:
                break
            await self._relieve()
        if not s.cancel_requested:
            s.status = BalanceStatus.Active

    async def _end_all_lines(self, end_state: LineState, reason: str) -> None:
        """Deactivate the scheduled and the active line, if any."""
        s = self.s
        ended: list[Line] = []
        events: list[EventRecord] = []
        for line, is_active in ((s.scheduled, False), (s.active, True)):
            if line is None:
                continue
            state = end_state if is_active else LineState.cancelled
            done = await self._deactivate(line, state)
            if not is_active and done.activated_at is not None:
                # The carrier's safety net started it as the line before ended, perhaps
                # before our order's answer came back: its state may read either way.
                events.append(self._carrier_activated(done))
            ended.append(done)
            events.append(self._event(state.value, done, reason=reason))
            self._archive(done)
        s.active = s.scheduled = None
        s.usage_check_at = None
        if ended:
            await self._record(lines=ended, events=events)

    async def _check_usage(self) -> None:
        """Ask the carrier for the active line's usage at the projected crossing time."""
        s = self.s
        assert s.active is not None
        s.usage_check_at = None
        try:
            report: UsageReport = await workflow.execute_activity_method(
                CarrierActivities.line_usage,
                LineCommand(carrier=s.carrier, iccid=s.iccid, line=s.active),
                start_to_close_timeout=CARRIER_CALL,
                heartbeat_timeout=CARRIER_HEARTBEAT,
                # A read may be abandoned (unlike an order): it changes nothing.
                schedule_to_close_timeout=timedelta(
                    seconds=max(1.0, min(30.0, s.active.validity_seconds / 10))
                ),
                retry_policy=timing.carrier_retry(s),
                summary=f"read usage of line {s.active.seq} at {s.carrier}",
            )
        except ActivityError:
            s.usage_check_at = self._now() + timedelta(
                seconds=max(1.0, s.active.validity_seconds / 20)
            )
            return
        self._apply_usage(report)

    async def _close(self, status: BalanceStatus) -> BalanceStatusView:
        """Record the final state; the workflow then completes."""
        self._set_status(status)
        await self._record(events=[self._event(status.value.lower(), None)], closed=True)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    async def _failing(self, reason: str) -> None:
        """The carrier refused for good: show Failing, then wait before the next attempt."""
        s = self.s
        await self._set_failing(reason)
        # Short passes (compressed time) retry sooner, in proportion to their validity.
        backoff = min(FAILING_BACKOFF, timedelta(seconds=max(1.0, s.product.validity_seconds / 4)))
        retry = f"Failing ({reason}): retry in {backoff.total_seconds():g} s"
        await self._wait(lambda: s.cancel_requested or s.paused, backoff, retry)

    async def _set_failing(self, reason: str) -> None:
        """Show the balance as Failing (search attribute, ledger event), once per episode."""
        s = self.s
        if s.failing_reason is None:
            s.failing_reason = reason
            self._set_status(BalanceStatus.Failing)
            await self._record(events=[self._event("failing", None, reason=reason)])

    def _recovered(self) -> None:
        s = self.s
        if s.failing_reason is not None:
            self._note_event("recovered", "workflow", after=s.failing_reason)
            s.failing_reason = None
            s.status = BalanceStatus.Active

    async def _sleep_until_next_deadline(self, now: datetime) -> None:
        s = self.s
        assert s.active is not None
        deadlines: list[tuple[datetime, str]] = []
        if timing.is_last_line(s):
            deadlines.append((timing.ends_at(s.active), f"line {s.active.seq} ends (last line)"))
        elif s.scheduled is None:
            deadlines.append((timing.order_at(s), f"order line {s.last_seq + 1}"))
        else:
            deadlines.append((timing.switch_at(s), f"switch to line {s.scheduled.seq}"))
        if s.usage_check_at is not None:
            deadlines.append((s.usage_check_at, f"check usage of line {s.active.seq}"))
        at, what = min(deadlines)
        timer = self._timer(at, f"sleep until {what} at {at:%H:%M:%SZ}")
        for other, pending in list(self._timers.items()):
            if other != at:
                pending.cancel()
                del self._timers[other]
        self._wake = False
        await workflow.wait_condition(lambda: self._wake or timer.done() or self._piled_up())

    def _next_deadline_is(self, at: datetime) -> bool:
        """Whether the main loop will sleep until ``at`` next: an order's Failing deadline
        is the switch time, so its timer is kept and slept on."""
        return self.s.active is not None and timing.switch_at(self.s) == at

    def _timer(self, at: datetime, summary: str) -> asyncio.Future[None]:
        """One Temporal timer per moment, shared by whoever waits for it: the wait for an
        order's Failing deadline and the sleep until the switch are the same timer, so a
        rotation's history has one timer where it had two (started, cancelled, started,
        fired). A moment already past is a future already done (no timer)."""
        timer = self._timers.get(at)
        if timer is not None and not timer.done():
            return timer
        # A timer that has fired is not reused: the workflow's clock can read a hair
        # before ``at`` when it fires (times are rounded on the way), and a fired timer
        # taken again would wake the loop at once, with nothing due, for ever.
        delay = at - self._now()
        if delay <= timedelta(0):
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        timer = asyncio.ensure_future(self._sleep_until(at, delay, summary))
        self._timers[at] = timer
        return timer

    async def _sleep_until(self, at: datetime, delay: timedelta, summary: str) -> None:
        await workflow.sleep(delay, summary=summary)
        self._floor = max(self._floor or at, at)

    def _now(self) -> datetime:
        """The workflow's time, never earlier than a timer it has seen fire.

        A worker handed this run after another worker died has woken it with the clock
        of the run's first workflow task (seen with temporalio 1.35; most likely it had
        built the run to answer a query while the other worker held that task). A timer
        that fired proves its moment has passed: woken by the order timer, the run
        orders, as any replay of it, which reads the true clock, will. A clock read a
        hair before a timer's moment (rounding) is taken as it was, so recorded runs
        replay as they ran."""
        now = workflow.now()
        if self._floor is not None and self._floor - now > STALE_CLOCK:
            return self._floor
        return now

    async def _wait(self, done: Any, timeout: timedelta, summary: str) -> None:
        """Sleep until ``timeout`` passes, ``done()`` holds, or a message arrives."""
        self._wake = False
        until = self._now() + timeout
        while True:
            try:
                await workflow.wait_condition(
                    lambda: self._wake or done() or self._piled_up(),
                    timeout=max(until - self._now(), timedelta(0)),
                    timeout_summary=summary,
                )
            except TimeoutError:
                return
            if not self._piled_up():
                return
            await self._relieve()

    def _piled_up(self) -> bool:
        """Messages have piled up while the run waits: their events are to be written, or
        the history has grown long and the run is to hand over. A balance that waits
        (paused, failing, asleep) takes any number of messages, and still hears resume
        and cancel."""
        s = self.s
        return bool(s.hand_over_when_long) and (
            len(s.pending_events) >= PENDING_EVENTS_MAX or self._history_is_long()
        )

    def _history_is_long(self) -> bool:
        info = workflow.info()
        return (
            info.get_current_history_length() >= HISTORY_EVENTS_MAX
            or info.get_current_history_size() >= HISTORY_BYTES_MAX
        )

    async def _relieve(self, step: ActivityHandle[Line] | None = None) -> None:
        """Messages have piled up (``_piled_up``): hand over if the history is long (a
        ``step`` in flight is cancelled, and the next run takes it up again), else write
        the events they noted."""
        if self._history_is_long():
            if step is not None:
                step.cancel()
            await self._continue_as_new()
        await self._record()

    # --- usage ------------------------------------------------------------------------

    def _apply_usage(self, report: UsageReport) -> None:
        """Take a usage observation of the active line; plan the next check from the rate."""
        s = self.s
        line = s.active
        if line is None or report.seq != line.seq or report.used_bytes < line.used_bytes:
            return
        if report.reference is not None and report.reference != line.reference:
            return
        last = line.usage_observed_at or line.activated_at
        self._note_exhaustion(line, report)
        if last is not None and report.observed_at <= last:
            return
        self._note_thresholds(line, report)
        line.prev_used_bytes, line.prev_observed_at = line.used_bytes, last
        line.used_bytes, line.usage_observed_at = report.used_bytes, report.observed_at
        self._plan_usage_check(line)
        self._wake = True

    def _note_exhaustion(self, line: Line, report: UsageReport) -> None:
        """The earliest carrier time the allowance was seen used up: throttled from then
        on (a late-delivered 100 % webhook beats a later read that saw it too)."""
        if report.used_bytes >= line.allowance_bytes and (
            line.exhausted_at is None or report.observed_at < line.exhausted_at
        ):
            line.exhausted_at = report.observed_at

    def _note_thresholds(self, line: Line, report: UsageReport) -> None:
        """A ``usage_threshold`` event per threshold this (newer) report crosses: usage
        only grows, so each fires once per line."""
        for percent in usage.crossed(line.used_bytes, report.used_bytes, line.allowance_bytes):
            self._note_event(
                "usage_threshold",
                "carrier",
                seq=line.seq,
                reference=line.reference,
                percent=percent,
                used_bytes=report.used_bytes,
                allowance_bytes=line.allowance_bytes,
                observed_at=report.observed_at.isoformat(),
            )

    def _plan_usage_check(self, line: Line) -> None:
        """Webhooks fire only at 50/80/100 %: read usage ourselves when the projection
        says the switch point is near."""
        s = self.s
        s.usage_check_at = usage.next_check(line, s.policy, self._now(), timing.switch_at(s))

    def _note_cap(self, now: datetime) -> None:
        """At the switch threshold with the day's cap spent, stay throttled and say so."""
        s = self.s
        if s.capped or s.active is None or not usage.switch_due(s.active, s.policy, now):
            return
        if timing.cap_reached(s, now):
            s.capped = True
            self._set_status(BalanceStatus.Throttled)
            self._note_event(
                "cap_reached",
                "workflow",
                seq=s.active.seq if s.active else None,
                max_lines_per_day=s.policy.max_lines_per_day,
            )

    def _count_line_today(self, line: Line) -> None:
        s = self.s
        day = (line.activated_at or self._now()).date()
        if s.day != day:
            s.day, s.lines_today = day, 0
        s.lines_today += 1

    # --- bookkeeping ------------------------------------------------------------------

    def _archive(self, line: Line) -> None:
        s = self.s
        s.archived = [*s.archived, line][-ARCHIVE_DEPTH:]

    def _adopt_product(self, line: Line) -> None:
        s = self.s
        if s.next_product is not None and s.next_product.id == line.product_id:
            s.product, s.next_product = s.next_product, None

    def _set_status(self, status: BalanceStatus) -> None:
        self.s.status = status
        self._publish()

    def _next_key(self) -> str:
        self.s.event_counter += 1
        return f"{self.s.balance_id}:{self.s.event_counter}"

    def _event(self, kind: str, line: Line | None, **detail: Any) -> EventRecord:
        if line is not None:
            detail = {"line_id": line.line_id, "reference": line.reference, **detail}
        return EventRecord(
            key=self._next_key(),
            balance_id=self.s.balance_id,
            seq=line.seq if line else None,
            kind=kind,
            actor="workflow",
            at=self._now(),
            detail=detail,
        )

    def _carrier_activated(self, line: Line) -> EventRecord:
        """The carrier activated ``line`` on its own, at the time it says."""
        event = self._event("activated", line, reason="started by the carrier")
        return event.model_copy(update={"actor": "carrier", "at": line.activated_at})

    def _note_event(self, kind: str, actor: str, seq: int | None = None, **detail: Any) -> None:
        """An event from a message handler, written with the next store call."""
        self.s.pending_events.append(
            EventRecord(
                key=self._next_key(),
                balance_id=self.s.balance_id,
                seq=seq,
                kind=kind,
                actor=actor,
                at=self._now(),
                detail=detail,
            )
        )

    async def _record(
        self,
        lines: list[Line] | None = None,
        events: list[EventRecord] | None = None,
        closed: bool = False,
    ) -> None:
        """Write the balance row, the given lines and all pending events."""
        s = self.s
        s.revision += 1
        self._publish()
        pending, s.pending_events = s.pending_events, []
        active = s.active
        kinds = ", ".join(e.kind for e in [*pending, *(events or [])])
        # A local activity: one marker event in history instead of a scheduled/started/
        # completed trio plus a workflow task; the write is idempotent, so a re-run after a
        # worker crash is harmless.
        await workflow.execute_local_activity_method(
            StoreActivities.record_changes,
            RecordChanges(
                balance_id=s.balance_id,
                iccid=s.iccid,
                carrier=s.carrier,
                balance=BalanceRecord(
                    balance_id=s.balance_id,
                    status=s.status,
                    product_id=s.product.id,
                    next_product_id=s.next_product.id if s.next_product else None,
                    line_seq=active.seq if active else None,
                    line_ends_at=active.ends_at if active else None,
                    rotations=s.rotations,
                    paused=s.paused,
                    capped=s.capped,
                    failing_reason=s.failing_reason,
                    closed=closed,
                    revision=s.revision,
                ),
                lines=lines or [],
                events=[*pending, *(events or [])],
            ),
            start_to_close_timeout=STORE_CALL,
            retry_policy=STORE_RETRY,
            summary=f"record {kinds or 'state'}",
        )

    def _publish(self) -> None:
        """Upsert the search attributes that changed since the last upsert."""
        s = self.s
        active = s.active
        wanted: list[SearchAttributeUpdate[Any]] = [
            search.BALANCE_STATE.value_set(s.status.value),
            search.ICCID.value_set(s.iccid),
            search.CARRIER.value_set(s.carrier),
            search.PRODUCT_ID.value_set(s.product.id),
        ]
        if active is not None:
            wanted.append(search.LINE_SEQ.value_set(active.seq))
            if active.ends_at is not None:
                wanted.append(search.LINE_ENDS_AT.value_set(active.ends_at))
        if not self._published:
            current = workflow.info().typed_search_attributes
            self._published = {pair.key.name: pair.value for pair in current}
        changed = [u for u in wanted if self._published.get(u.key.name) != u.value]
        if changed:
            workflow.upsert_search_attributes(changed)
            for update in changed:
                self._published[update.key.name] = update.value
        self._describe()

    def _describe(self) -> None:
        """The run's current details in the Temporal Web UI. The summary given at start is
        not carried over by continue-as-new, so each run says what it is doing itself (kept
        by the worker, answered to the UI's query: no history event)."""
        s = self.s
        parts = [f"**{s.status.value}**: eSIM {s.iccid} on {s.product.id}"]
        if s.active is not None:
            ends = timing.ends_at(s.active)
            parts.append(f"line {s.active.seq} active until {ends:%H:%M:%SZ}")
        if s.scheduled is not None:
            parts.append(f"line {s.scheduled.seq} ordered")
        parts.append(f"rotations {s.rotations} ({s.early_rotations} early by usage)")
        if s.failing_reason:
            parts.append(f"failing: {s.failing_reason}")
        workflow.set_current_details(" · ".join(parts))


def _cause(error: ActivityError) -> str:
    cause = error.cause
    return str(cause.message if isinstance(cause, ApplicationError) else cause or error)
