"""BalanceWorkflow: one per Balance, id ``balance-{iccid}``; chains carrier passes.

The shell around the rotation core (``workflows.rotation``): the run loop asks the core
what to do next, runs that step (``workflows.steps`` calls the carrier,
``workflows.ledger`` writes what changed) and asks again. Message handlers give what they
hear to the core; the query answers from the state.

A rotation, as the loop runs it: sleep until the order is due (``lead`` before the active
line ends, or sooner by usage); order the next line; sleep until the switch (``margin``
before the end, the reset boundary itself for passes that end there, or sooner by
usage); activate the next line and, once the carrier confirms it, end the old one. Then
hand the state over to a new run, when the next order falls due, so a run's history
stays small.
"""

from __future__ import annotations

from collections.abc import Callable

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.audit_restart import RestoreActivities
    from models.payloads import (
        ActionRequest,
        AuditNotice,
        BalanceState,
        BalanceStatus,
        BalanceStatusView,
        ChangePolicy,
        ChangeProduct,
        LineState,
        RestoreBalance,
        RestoredBalance,
        UsageReport,
    )
    from workflows import caps, messages, rotation
    from workflows.clock import Clock
    from workflows.ledger import Ledger, describe
    from workflows.rotation import Do
    from workflows.steps import CARRIER_CALL, CarrierSteps, carrier_retry, history_is_long

# The patches behind rules added while balances were running (rotation.hands_over): each
# balance asks them in a run's first workflow task and carries the answer in its state.
HAND_OVER_AFTER_BRING_UP = "hand-over-after-bring-up"
HAND_OVER_AT_ORDER = "hand-over-at-order"
HAND_OVER_WHEN_LONG = "hand-over-when-long"
ROTATE_WITHIN_CAP = "rotate-within-cap"
QUEUED_BY_CARRIER = "queued-by-carrier"
ACTIVATION_YIELDS = "activation-yields"
CAP_LIFTS_AT_MIDNIGHT = "cap-lifts-at-midnight"
CAP_RECORDED_AT_ONCE = "cap-recorded-at-once"


@workflow.defn
class BalanceWorkflow(CarrierSteps):
    """A Balance: one eSIM kept on high speed by a chain of Balance Lines."""

    @workflow.init
    def __init__(self, state: BalanceState) -> None:
        self.s = state
        self.clock = Clock()
        self.ledger = Ledger()
        self.this_run = rotation.Run()
        # Set by a message the loop should look at; cleared by whoever waits.
        self._wake = False
        # Messages that came while the state was being restored (see _restore).
        self._restoring = False
        self._held: list[Callable[[], object]] = []

    @workflow.run
    async def run(self, state: BalanceState) -> BalanceStatusView:
        self._ask_patches()
        if self.s.restore and not await self._restore():
            return self.status()
        describe(self.s)
        while True:
            s, run = self.s, self.this_run
            run.history_long = history_is_long()
            run.suggested = workflow.info().is_continue_as_new_suggested()
            if caps.cap_lifts(s, self.clock.now()):
                caps.lift_cap(s, self.clock.now())
                self.ledger.publish(s)
            step = rotation.next_step(s, self.clock.now(), run)
            if step.cap_reached:
                caps.throttle(s, self.clock.now())
                self.ledger.publish(s)
                if s.cap_recorded_at_once and step.do == Do.sleep:
                    # Written before the sleep: nothing may wake it before the switch (a
                    # usage poller's reads of a spent line are no news).
                    continue
            match step.do:
                case Do.hand_over:
                    await self._continue_as_new()
                case Do.record:
                    # With the active line: usage events change its usage and exhaustion.
                    await self.ledger.record(s, rotation.Changes([s.active] if s.active else []))
                case Do.cancel:
                    await self._end_all_lines(LineState.cancelled, "cancelled")
                    return await self._close(BalanceStatus.Cancelled)
                case Do.complete:
                    return await self._close(BalanceStatus.Completed)
                case Do.pause:
                    await self._pause()
                case Do.bring_up:
                    await self._bring_up_line()
                    run.brought_up = s.active is not None
                case Do.order:
                    await self._order_next()
                case Do.switch:
                    run.rotated = await self._switch(step.why) or run.rotated
                case Do.end_term:
                    await self._end_all_lines(LineState.expired, "term complete")
                case Do.check_usage:
                    await self._check_usage()
                case Do.sleep:
                    assert step.until is not None
                    await self._sleep(step)

    def _ask_patches(self) -> None:
        """Ask, in the run's first workflow task and before any local activity (a patch
        asked after one can land in another workflow task than its marker, and then not
        replay), the patches this balance has not taken yet."""
        s = self.s
        if s.hand_over_after_bring_up is None:
            # Decided once, in the balance's first run: runs recorded before it keep
            # their bring-up in one run for good.
            s.hand_over_after_bring_up = workflow.patched(HAND_OVER_AFTER_BRING_UP)
        if not s.hand_over_at_order:
            s.hand_over_at_order = workflow.patched(HAND_OVER_AT_ORDER)
        if not s.hand_over_when_long:
            s.hand_over_when_long = workflow.patched(HAND_OVER_WHEN_LONG)
        if not s.rotate_within_cap:
            s.rotate_within_cap = workflow.patched(ROTATE_WITHIN_CAP)
        if not s.queued_by_carrier:
            s.queued_by_carrier = workflow.patched(QUEUED_BY_CARRIER)
        if not s.activation_yields:
            s.activation_yields = workflow.patched(ACTIVATION_YIELDS)
        if not s.cap_lifts_at_midnight:
            s.cap_lifts_at_midnight = workflow.patched(CAP_LIFTS_AT_MIDNIGHT)
        if not s.cap_recorded_at_once:
            s.cap_recorded_at_once = workflow.patched(CAP_RECORDED_AT_ONCE)

    async def _sleep(self, step: rotation.Step) -> None:
        """Until the step's moment, a message, or messages piling up (``_piled_up``)."""
        assert step.until is not None
        timer = self.clock.timer(step.until, f"sleep until {step.why} at {step.until:%H:%M:%SZ}")
        self.clock.keep_only(step.until)
        self._wake = False
        await workflow.wait_condition(lambda: self._wake or timer.done() or self._piled_up())

    async def _pause(self) -> None:
        """End every line at the carrier and wait for resume or cancel."""
        s = self.s
        await self._end_all_lines(LineState.cancelled, "paused")
        rotation.paused(s)
        await self.ledger.record(s)
        while True:
            await workflow.wait_condition(
                lambda: not s.paused or s.cancel_requested or self._piled_up(),
                timeout_summary="paused until resume or cancel",
            )
            if not s.paused or s.cancel_requested:
                break
            await self._relieve()
        rotation.resumed(s)

    async def _close(self, status: BalanceStatus) -> BalanceStatusView:
        """Record the final state; the workflow then completes."""
        await self.ledger.record(self.s, rotation.closed(self.s, status, self.clock.now()), True)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

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
            retry_policy=carrier_retry(s),
            summary=f"continue from the database and the lines at {s.carrier}",
        )
        self._restoring = False
        if restored.state is None:
            rotation.closed_meanwhile(s)
            self.ledger.publish(s)
            return False
        new = restored.state
        for patch in ("after_bring_up", "at_order", "when_long"):
            setattr(new, f"hand_over_{patch}", getattr(s, f"hand_over_{patch}"))
        new.rotate_within_cap = s.rotate_within_cap
        new.queued_by_carrier = s.queued_by_carrier
        new.activation_yields = s.activation_yields
        new.cap_lifts_at_midnight = s.cap_lifts_at_midnight
        new.cap_recorded_at_once = s.cap_recorded_at_once
        self.s = new
        held, self._held = self._held, []
        for message in held:
            message()
        changes = rotation.restored(
            new, self.clock.now(), restored.while_gone, restored.started_while_gone
        )
        await self.ledger.record(new, changes)
        return True

    def _hear(self, message: Callable[[], object]) -> None:
        """Apply a message to the state and wake the run, unless the message said it was
        stale (False). While the state is being restored, keep it for the restored state."""
        if self._restoring:
            self._held.append(message)
        elif message() is not False:
            self._wake = True

    # --- signals ----------------------------------------------------------------------

    @workflow.signal
    def usage_reported(self, report: UsageReport) -> None:
        """The carrier (webhook or poller) saw this many bytes used on line ``seq``."""
        self._hear(lambda: rotation.take_usage(self.s, report, self.clock.now()))

    @workflow.signal
    def pause(self, req: ActionRequest) -> None:
        """Suspend the eSIM: end its lines at the carrier until ``resume``."""
        self._hear(lambda: messages.pause(self.s, req, self.clock.now()))

    @workflow.signal
    def resume(self, req: ActionRequest) -> None:
        """Bring a paused eSIM back on a fresh line."""
        self._hear(lambda: messages.resume(self.s, req, self.clock.now()))

    @workflow.signal
    def cancel(self, req: ActionRequest) -> None:
        """End the balance: every line is ended at the carrier, the workflow completes."""
        self._hear(lambda: messages.cancel(self.s, req, self.clock.now()))

    @workflow.signal
    def rotate_now(self, req: ActionRequest) -> None:
        """Switch to a fresh line now, within the day's cost cap unless ``force``d."""
        self._hear(lambda: messages.rotate_now(self.s, req, self.clock.now()))

    @workflow.signal
    def audit(self, notice: AuditNotice) -> None:
        """The audit saw the carrier disagree with the workflow's lines."""
        self._hear(lambda: messages.audit(self.s, notice, self.clock.now()))

    # --- updates ----------------------------------------------------------------------

    @workflow.update
    def change_product(self, req: ChangeProduct) -> BalanceStatusView:
        """Use another product of the same carrier from the next line ordered on."""
        self._hear(lambda: messages.change_product(self.s, req, self.clock.now()))
        return self.status()

    @change_product.validator
    def _validate_change_product(self, req: ChangeProduct) -> None:
        problem = messages.change_problem(self.s, self._restoring) or messages.product_problem(
            self.s, req
        )
        if problem is not None:
            raise ValueError(problem)

    @workflow.update
    def change_policy(self, req: ChangePolicy) -> BalanceStatusView:
        """Rotate by another policy from now on; the next order and switch times follow it."""
        self._hear(lambda: messages.change_policy(self.s, req, self.clock.now()))
        return self.status()

    @change_policy.validator
    def _validate_change_policy(self, req: ChangePolicy) -> None:
        problem = messages.change_problem(self.s, self._restoring) or messages.policy_problem(
            self.s, req
        )
        if problem is not None:
            raise ValueError(problem)

    # --- query ------------------------------------------------------------------------

    @workflow.query
    def status(self) -> BalanceStatusView:
        """The stack of lines (active, scheduled, archived), usage, deadlines and flags."""
        return rotation.view(self.s, self.clock.now())
