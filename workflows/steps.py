"""The steps of a rotation that call the carrier, as the Balance shell runs them.

Each step runs an activity, waits for it the way a balance must (a carrier failing for
hours keeps the same activity retrying; past the step's deadline the balance shows
Failing meanwhile), and gives the outcome to the rotation core, which says what it does
to the state and which ledger events it implies.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, TimeoutError
from temporalio.workflow import ActivityHandle

with workflow.unsafe.imports_passed_through():
    from activities.carrier import CarrierActivities
    from carriers.errors import NON_RETRYABLE
    from models.payloads import (
        BalanceState,
        Line,
        LineCommand,
        LineState,
        OrderLineInput,
        UsageReport,
    )
    from workflows import rotation, timing
    from workflows.clock import Clock
    from workflows.ledger import Ledger

CARRIER_CALL = timedelta(seconds=30)
# Carrier activities heartbeat while a call runs: a dead worker's attempt is retried
# after this, not after CARRIER_CALL. Not shorter: at a boundary a busy worker's
# heartbeats lag by seconds, and an attempt timed out while it still runs is done twice
# (the 10,000 herd retried 5,655 orders after a heartbeat timeout at 5 s, 0 and 27 at 15 s).
CARRIER_HEARTBEAT = timedelta(seconds=15)
# Activation is confirmed by polling: each retry asks the carrier again (at most every
# 5 s, or a tenth of the lead if that is shorter: see activation_retry).
ACTIVATION_POLL_MAX = timedelta(seconds=5)
# Reads of a line the carrier should have started by itself before the workflow stops
# polling inside its workflow task (see CarrierSteps._confirm_started).
CONFIRM_ATTEMPTS = 6
# A waiting run hands over at this many history events (or bytes). Temporal refuses a
# run's 10,001st signal, and cannot close a run while signals keep coming: under a flood
# each attempt to hand over fails, and the signals since the last completed workflow task
# pile into the next one. Handing over near the limit, not at Temporal's suggestion
# (4,096), keeps that pile to the last 2,000 or so, a task a loaded worker can run.
HISTORY_EVENTS_MAX = 8_000
HISTORY_BYTES_MAX = 8 * 1024 * 1024


class Yielded(Exception):
    """A wait for a carrier step gave way to a pause or a cancel (``CarrierSteps._watch``)."""


class CarrierSteps:
    """Order, activate, switch, end and read lines; the shell's waits and hand-over."""

    s: BalanceState
    clock: Clock
    ledger: Ledger
    _wake: bool

    # --- order ------------------------------------------------------------------------

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
                known_line_ids=[line.line_id for line in (s.active,) if line and line.line_id],
            ),
            start_to_close_timeout=CARRIER_CALL,
            heartbeat_timeout=CARRIER_HEARTBEAT,
            retry_policy=carrier_retry(s),
            summary=f"order line {seq} ({product.id}) at {s.carrier}",
        )
        deadline = rotation.order_deadline(s, self.clock.now())
        try:
            line = await self._watch(handle, deadline, f"ordering line {seq}")
        except ActivityError as error:
            await self._failing(f"ordering line {seq} failed: {_cause(error)}")
            return False
        await self.ledger.record(s, rotation.ordered(s, seq, line, self.clock.now()))
        return s.scheduled is line

    # --- activate and switch ----------------------------------------------------------

    async def _bring_up_line(self) -> None:
        """No line is active (first line, or after resume): order one and activate it now."""
        s = self.s
        if s.scheduled is None and not await self._order_next():
            return
        assert s.scheduled is not None
        active = await self._activate(s.scheduled, timing.patience(s, self.clock.now()))
        if active is not None:
            await self.ledger.record(s, rotation.brought_up(s, active, self.clock.now()))

    async def _switch(self, reason: str) -> bool:
        """Activate the scheduled line, then end the active one. True once switched."""
        s = self.s
        old, new = s.active, s.scheduled
        assert old is not None and new is not None
        deadline = rotation.switch_deadline(s)
        plan = rotation.switch_plan(s, reason)
        rotation.begin_switch(s)
        if not plan.confirm_only or plan.old_ends == "deactivate_first":
            # A switch the carrier makes itself would never be seen: not published.
            self.ledger.publish(s)
        ended_first = None
        if plan.old_ends == "deactivate_first":
            ended_first = await self._deactivate(old, rotation.end_state(reason))
        active = await self._activate(new, deadline, confirm_only=plan.confirm_only)
        if active is None:
            return False
        if ended_first is not None:
            ended = ended_first
        elif plan.old_ends == "deactivate":
            ended = await self._deactivate(old, rotation.end_state(reason))
        else:
            ended = rotation.ended_by_carrier(plan, old, active, reason)
        await self.ledger.record(s, rotation.switched(s, active, ended, reason, self.clock.now()))
        return True

    async def _activate(
        self, line: Line, deadline: datetime, confirm_only: bool = False
    ) -> Line | None:
        """Activate ``line`` and wait for the carrier to confirm it; None if it failed.

        ``confirm_only``: the carrier has started the line by itself (a queued start at
        a reset boundary), so this is a read that is safe to repeat: a local activity
        (one marker event, no extra workflow task) instead of a scheduled one."""
        s = self.s
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
                    retry_policy=activation_retry(s),
                    summary=f"activate line {line.seq} at {s.carrier}, wait for confirmation",
                )
                # A line the carrier never starts (an eSIM never installed) must not hold
                # a pause or a cancel back for ever.
                yields = (lambda: s.paused or s.cancel_requested) if s.activation_yields else None
                active = await self._watch(handle, deadline, what, yields)
        except Yielded:
            return None
        except ActivityError as error:
            # Only non-retryable errors end the activity: the carrier will never activate
            # this package. Drop it and order afresh.
            await self.ledger.record(s, rotation.activation_refused(s, line, self.clock.now()))
            await self._failing(f"activating line {line.seq} failed: {_cause(error)}")
            return None
        if active.state != LineState.active:
            await self.ledger.record(s, rotation.ended_unconfirmed(s, active, self.clock.now()))
            await self._set_failing(f"line {line.seq} ended at the carrier before confirmation")
            return None
        rotation.confirmed(s, active, self.clock.now())
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
        (``confirm_retry``: under the 10 s workflow task timeout, so the task is not
        heartbeated either), and on any failure the scheduled activity, which polls
        without holding a slot, reads again and decides."""
        handle = workflow.start_local_activity_method(
            CarrierActivities.activate_line,
            command,
            start_to_close_timeout=CARRIER_CALL,
            retry_policy=confirm_retry(self.s),
            summary=f"confirm line {command.line.seq} started at {self.s.carrier}",
        )
        try:
            return await self._watch(handle, deadline, what)
        except (ActivityError, ApplicationError, TimeoutError):
            # A local activity's last failure comes as it was raised, not as an
            # ActivityError.
            return None

    async def _watch(
        self,
        handle: ActivityHandle[Line],
        deadline: datetime,
        what: str,
        yields: Callable[[], bool] | None = None,
    ) -> Line:
        """Await a carrier activity that retries until the carrier answers; should it still
        be retrying at ``deadline``, show the balance as Failing meanwhile. Once
        ``yields()`` holds (a pause or cancel came) the activity is cancelled and
        ``Yielded`` raised.

        The activity is not abandoned and restarted for being slow: a carrier that fails
        for hours is retried by the same activity. Only a run whose history has grown
        long with messages meanwhile cancels it and hands over; the next run takes the
        step up again, and an order attempt still in flight buys nothing twice (its
        claim, models/claims.py).
        """
        timer = self.clock.timer(deadline, f"{what}: Failing if not done by {deadline:%H:%M:%SZ}")
        failing = False

        def moved() -> bool:
            return (
                handle.done()
                or (timer.done() and not failing)
                or self._piled_up()
                or (yields is not None and yields())
            )

        while True:
            await workflow.wait_condition(moved)
            if handle.done():
                break
            if yields is not None and yields():
                handle.cancel()
                self.clock.drop(deadline)
                raise Yielded(what)
            if timer.done() and not failing:
                await self._set_failing(f"{what} still failing at {deadline:%H:%M:%SZ}")
                failing = True
            else:
                await self._relieve(handle)
        # An order's Failing deadline is the switch time: its timer is the one the run
        # sleeps on next, and is kept.
        if not failing and not (self.s.active is not None and timing.switch_at(self.s) == deadline):
            self.clock.drop(deadline)
        return await handle

    # --- end lines and read usage -----------------------------------------------------

    async def _deactivate(self, line: Line, end_state: LineState) -> Line:
        """End ``line`` at the carrier; retried until the carrier confirms."""
        s = self.s
        ended: Line = await workflow.execute_activity_method(
            CarrierActivities.deactivate_line,
            LineCommand(carrier=s.carrier, iccid=s.iccid, line=line, end_state=end_state),
            start_to_close_timeout=CARRIER_CALL,
            heartbeat_timeout=CARRIER_HEARTBEAT,
            retry_policy=carrier_retry(s),
            summary=f"deactivate line {line.seq} at {s.carrier} ({end_state.value})",
        )
        return ended

    async def _end_all_lines(self, end_state: LineState, reason: str) -> None:
        """Deactivate the scheduled and the active line, if any (a scheduled line is
        cancelled, whatever ends the active one)."""
        s = self.s
        ended: list[tuple[Line, bool]] = []
        for line, is_active in ((s.scheduled, False), (s.active, True)):
            if line is not None:
                state = end_state if is_active else LineState.cancelled
                ended.append((await self._deactivate(line, state), is_active))
        changes = rotation.lines_ended(s, ended, reason, self.clock.now())
        if ended:
            await self.ledger.record(s, changes)

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
                retry_policy=carrier_retry(s),
                summary=f"read usage of line {s.active.seq} at {s.carrier}",
            )
        except ActivityError:
            rotation.usage_unread(s, self.clock.now())
            return
        rotation.take_usage(s, report, self.clock.now())

    # --- Failing, waits and the hand-over ---------------------------------------------

    async def _failing(self, reason: str) -> None:
        """The carrier refused for good: show Failing, then wait before the next attempt."""
        s = self.s
        await self._set_failing(reason)
        backoff = rotation.failing_backoff(s)
        retry = f"Failing ({reason}): retry in {backoff.total_seconds():g} s"
        await self._wait(lambda: s.cancel_requested or s.paused, backoff, retry)

    async def _set_failing(self, reason: str) -> None:
        """Show the balance as Failing (search attribute, ledger event), once per episode."""
        changes = rotation.failing(self.s, reason, self.clock.now())
        if changes is not None:
            await self.ledger.record(self.s, changes)

    async def _wait(self, done: Callable[[], bool], timeout: timedelta, summary: str) -> None:
        """Sleep until ``timeout`` passes, ``done()`` holds, or a message arrives."""
        self._wake = False
        until = self.clock.now() + timeout
        while True:
            try:
                await workflow.wait_condition(
                    lambda: self._wake or done() or self._piled_up(),
                    timeout=max(until - self.clock.now(), timedelta(0)),
                    timeout_summary=summary,
                )
            except TimeoutError:
                return
            if not self._piled_up():
                return
            await self._relieve()

    def _piled_up(self) -> bool:
        return rotation.piled_up(self.s, history_is_long())

    async def _relieve(self, step: ActivityHandle[Line] | None = None) -> None:
        """Messages have piled up (``rotation.piled_up``): hand over if the history is
        long (a ``step`` in flight is cancelled, and the next run takes it up again), else
        write the events they noted."""
        if history_is_long():
            if step is not None:
                step.cancel()
            await self._continue_as_new()
        await self.ledger.record(self.s)

    async def _continue_as_new(self) -> None:
        """Hand the state over to a new run, once every message handler has finished."""
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(self.s)


def history_is_long() -> bool:
    info = workflow.info()
    return (
        info.get_current_history_length() >= HISTORY_EVENTS_MAX
        or info.get_current_history_size() >= HISTORY_BYTES_MAX
    )


def _tenth_of_lead(s: BalanceState, most: timedelta) -> timedelta:
    """A tenth of the lead, between 1 s and ``most``: retries after an outage come while
    there is still time to order and switch before the line ends."""
    lead = s.policy.lead(s.product.validity_seconds)
    return min(most, timedelta(seconds=max(1.0, lead / 10)))


def carrier_retry(s: BalanceState) -> RetryPolicy:
    """Backoff from 1 s doubling to a tenth of the lead (at most 30 s)."""
    cap = _tenth_of_lead(s, timedelta(seconds=30))
    return RetryPolicy(
        initial_interval=min(timedelta(seconds=1), cap),
        backoff_coefficient=2.0,
        maximum_interval=cap,
        non_retryable_error_types=NON_RETRYABLE,
    )


def activation_retry(s: BalanceState) -> RetryPolicy:
    """Polls for the carrier's confirmation from 0.3 s, backing off to a tenth of the lead
    (at most 5 s): after an outage a short pass's switch is retried within seconds."""
    cap = _tenth_of_lead(s, ACTIVATION_POLL_MAX)
    return RetryPolicy(
        initial_interval=timedelta(milliseconds=300),
        backoff_coefficient=1.5,
        maximum_interval=cap,
        non_retryable_error_types=NON_RETRYABLE,
    )


def confirm_retry(s: BalanceState) -> RetryPolicy:
    """The activation polls, cut short: six reads in about four seconds."""
    return dataclasses.replace(activation_retry(s), maximum_attempts=CONFIRM_ATTEMPTS)


def _cause(error: ActivityError) -> str:
    cause = error.cause
    return str(cause.message if isinstance(cause, ApplicationError) else cause or error)
