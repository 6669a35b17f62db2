"""Carrier activities: order, activate, deactivate and read usage of Balance Lines.

Each method translates a payload into one carrier operation. Known carrier rejections
become non-retryable ``ApplicationError``s; transient failures propagate for Temporal to
retry with backoff. Nothing here loops or sleeps: an activation the carrier has not yet
confirmed fails with ``ActivationPending`` and Temporal's retry policy polls for it.

Scheduled (not local) attempts heartbeat every second while their carrier call runs, so
when a worker dies mid-call Temporal retries elsewhere after the heartbeat timeout (15 s)
instead of the call's whole start-to-close timeout; calls that answer within a second
send no heartbeat at all.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.claims import ClaimHeld, OrderClaims
from carriers.base import Carrier, CarrierLine
from carriers.errors import (
    CarrierError,
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
)
from carriers.ratelimit import SEND_BY
from models.payloads import Line, LineCommand, LineState, OrderLineInput, UsageReport

ACTIVATION_PENDING = "ActivationPending"
ORDER_IN_FLIGHT = "OrderInFlight"
SETTLED_FAILURES = ("CarrierRejected", "CarrierUnavailable")  # the carrier took no order
CLAIM_RETRY_MAX = timedelta(seconds=30)  # a retry waiting for another worker's claim
LINE_ENDED = "LineEnded"
NON_RETRYABLE = ["CarrierRejected", LINE_ENDED, "UnknownCarrier"]
HEARTBEAT_EVERY = 1.0  # seconds between heartbeats while one attempt runs

P = ParamSpec("P")
R = TypeVar("R")


def heartbeating(fn: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """Heartbeat while ``fn`` runs, when the attempt has a heartbeat timeout."""

    @functools.wraps(fn)
    async def attempt(*args: P.args, **kwargs: P.kwargs) -> R:
        info = activity.info()
        if info.is_local or not info.heartbeat_timeout:
            return await fn(*args, **kwargs)
        beats = asyncio.create_task(_beat())
        try:
            return await fn(*args, **kwargs)
        finally:
            beats.cancel()

    return attempt


async def _beat() -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_EVERY)
        activity.heartbeat()


def carrier_failure(error: CarrierError) -> ApplicationError:
    """Map the carrier error tree onto Temporal's retry semantics."""
    if isinstance(error, CarrierRejected):
        return ApplicationError(str(error), error.code, type="CarrierRejected", non_retryable=True)
    if isinstance(error, CarrierUnavailable):
        delay = timedelta(seconds=error.retry_after) if error.retry_after else None
        return ApplicationError(str(error), type="CarrierUnavailable", next_retry_delay=delay)
    if isinstance(error, CarrierOutcomeUnknown):
        return ApplicationError(str(error), type="CarrierOutcomeUnknown")
    return ApplicationError(str(error), type="CarrierError")


def _merge(line: Line, found: CarrierLine) -> Line:
    """Our line updated with what the carrier says of it."""
    state = {
        "scheduled": LineState.scheduled,
        "active": LineState.active,
        "ended": LineState.expired if found.activated_at else LineState.failed,
    }[found.status]
    return line.model_copy(
        update={
            "line_id": found.line_id,
            "state": state,
            "ordered_at": found.ordered_at,
            "activated_at": found.activated_at,
            "ends_at": found.ends_at,
            "ended_at": found.ended_at,
            "allowance_bytes": found.allowance_bytes,
            "used_bytes": max(line.used_bytes, found.used_bytes),
        }
    )


# The payloads of ``find_carrier_lines`` (``CarrierLinesWorkflow``) are here rather than in
# ``models``: the lines are the carriers' own shape.
class CarrierLinesInput(BaseModel):
    """Read what ``carrier`` says of the lines on ``iccid``."""

    carrier: str
    iccid: str


class CarrierLinesResult(BaseModel):
    """An eSIM's lines as its carrier answers for them, or why they could not be read."""

    lines: list[CarrierLine] = []
    error: str | None = None


class CarrierActivities:
    """Activities against the carriers; one long-lived client per carrier, injected."""

    def __init__(self, carriers: Mapping[str, Carrier], claims: OrderClaims | None = None) -> None:
        self._carriers = carriers
        # Orders running in this worker, by reference (see order_line).
        self._ordering: dict[str, asyncio.Future[Line]] = {}
        self._claims = claims  # orders running in other workers (None: this one only)

    def _carrier(self, name: str) -> Carrier:
        try:
            return self._carriers[name]
        except KeyError:
            raise ApplicationError(
                f"no client for carrier {name!r}", type="UnknownCarrier", non_retryable=True
            ) from None

    @activity.defn(name="order_line")
    @heartbeating
    async def order_line(self, req: OrderLineInput) -> Line:
        """Buy line ``seq`` — unless the carrier already has one with our reference.

        Carriers have no idempotency keys, so this looks before it buys: an earlier
        attempt whose response was lost has left a package carrying our reference.
        Looking cannot see an earlier attempt that is still running, as on a loaded
        worker, where the server retries an attempt it has timed out while that attempt
        still waits to send its order: the 10,000-balance herd had
        23,365 order attempts complete after the server had given up on them, and bought
        5 packages twice. A retry in the same worker therefore joins the order in flight
        for its reference instead of starting another; the order runs to its end even
        when the attempt that started it is cancelled. A retry in another worker finds
        the order claimed (activities/claims.py) and fails with ``OrderInFlight``, to be
        retried until the claim is gone.
        """
        ordering = self._ordering.get(req.reference)
        if ordering is None:
            ordering = asyncio.ensure_future(self._claimed_order(req))
            self._ordering[req.reference] = ordering
            ordering.add_done_callback(lambda _: self._ordering.pop(req.reference, None))
        return await asyncio.shield(ordering)

    async def _claimed_order(self, req: OrderLineInput) -> Line:
        if self._claims is None:
            return await self._order_line(req, send_by=None)
        try:
            claim = await asyncio.to_thread(self._claims.take, req.reference)
        except ClaimHeld as held:
            wait = held.lease_until - datetime.now(UTC)
            raise ApplicationError(
                str(held),
                type=ORDER_IN_FLIGHT,
                category=ApplicationErrorCategory.BENIGN,
                next_retry_delay=min(max(wait, timedelta(seconds=1)), CLAIM_RETRY_MAX),
            ) from None
        try:
            line = await self._order_line(req, send_by=claim.send_by)
        except ApplicationError as failed:
            if failed.type in SETTLED_FAILURES:  # no order went out: let anyone retry
                await asyncio.to_thread(self._claims.release, req.reference)
            raise
        # Bought or adopted. (An attempt whose request may have gone out keeps the claim
        # until its lease ends, or until a retry in this process takes it again.)
        await asyncio.to_thread(self._claims.release, req.reference)
        return line

    async def _order_line(self, req: OrderLineInput, send_by: datetime | None) -> Line:
        carrier = self._carrier(req.carrier)
        line = Line(
            seq=req.seq,
            reference=req.reference,
            product_id=req.product.id,
            carrier_product_id=req.product.carrier_product_id,
            allowance_bytes=req.product.allowance_bytes,
            validity_seconds=req.product.validity_seconds,
        )
        try:
            mine = [
                found
                for found in await carrier.find_lines(req.iccid)
                if found.reference == req.reference
            ]
            if mine:
                if len(mine) > 1:
                    activity.logger.error(
                        "carrier holds %d packages for reference %s", len(mine), req.reference
                    )
                activity.logger.info("adopting %s for %s", mine[0].line_id, req.reference)
                return _merge(line, mine[0])
            if send_by is not None and datetime.now(UTC) > send_by:
                raise CarrierUnavailable(req.carrier, f"order for {req.reference} not sent: late")
            token = SEND_BY.set(send_by)
            try:
                placed = await carrier.order(
                    req.iccid, req.product.carrier_product_id, req.reference, req.start_at
                )
            finally:
                SEND_BY.reset(token)
        except CarrierError as error:
            raise carrier_failure(error) from error
        return _merge(line, placed)

    @activity.defn(name="activate_line")
    @heartbeating
    async def activate_line(self, cmd: LineCommand) -> Line:
        """Ask the carrier to activate the line; succeed once it is ACTIVE (or has ended)."""
        carrier = self._carrier(cmd.carrier)
        assert cmd.line.line_id is not None
        try:
            try:
                found = await carrier.activate(cmd.line.line_id)
            except CarrierRejected as refused:
                # Refused because the package has ended meanwhile (it may have been
                # active: a queued start, or activation on attach)? Report what it was.
                found = await carrier.get_line(cmd.line.line_id)
                if found.status != "ended":
                    raise carrier_failure(refused) from refused
        except CarrierError as error:
            raise carrier_failure(error) from error
        if found.status == "scheduled":
            # Benign: Temporal retries to poll, without logging each attempt as a failure.
            raise ApplicationError(
                f"line {cmd.line.seq} not yet active at {cmd.carrier}",
                type=ACTIVATION_PENDING,
                category=ApplicationErrorCategory.BENIGN,
            )
        # Active — or ended before we could confirm it: the workflow records what it was.
        return _merge(cmd.line, found)

    @activity.defn(name="deactivate_line")
    @heartbeating
    async def deactivate_line(self, cmd: LineCommand) -> Line:
        """End the line at the carrier (idempotent); the result carries the carrier's end."""
        carrier = self._carrier(cmd.carrier)
        assert cmd.line.line_id is not None
        try:
            found = await carrier.deactivate(cmd.line.line_id)
        except CarrierError as error:
            raise carrier_failure(error) from error
        ended = _merge(cmd.line, found)
        return ended.model_copy(update={"state": cmd.end_state or LineState.cancelled})

    @activity.defn(name="line_usage")
    @heartbeating
    async def line_usage(self, cmd: LineCommand) -> UsageReport:
        """Read the line's used bytes at the carrier."""
        carrier = self._carrier(cmd.carrier)
        assert cmd.line.line_id is not None
        try:
            usage = await carrier.usage(cmd.line.line_id)
        except CarrierError as error:
            raise carrier_failure(error) from error
        return UsageReport(
            seq=cmd.line.seq,
            used_bytes=usage.used_bytes,
            observed_at=usage.observed_at,
            reference=cmd.line.reference,
        )

    @activity.defn(name="find_carrier_lines")
    async def find_carrier_lines(self, req: CarrierLinesInput) -> CarrierLinesResult:
        """Every line the carrier holds on the ICCID (the dashboard's carrier lane)."""
        try:
            lines = await self._carrier(req.carrier).find_lines(req.iccid)
        except CarrierError as error:
            raise carrier_failure(error) from error
        return CarrierLinesResult(lines=sorted(lines, key=lambda line: line.ordered_at))
