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
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import ParamSpec, TypeVar

from pydantic import BaseModel
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from carriers.base import Carrier, CarrierLine
from carriers.errors import (
    LAST_BUNDLE,
    CarrierError,
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
)
from carriers.ratelimit import SEND_BY
from models.claims import Claim, ClaimHeld, OrderClaims
from models.payloads import Line, LineCommand, LineState, OrderLineInput, UsageReport
from models.prices import CataloguePrices, line_price

ACTIVATION_PENDING = "ActivationPending"
ORDER_IN_FLIGHT = "OrderInFlight"
ORDER_IN_DOUBT = "OrderInDoubt"
CLAIM_RETRY_MAX = timedelta(seconds=30)  # a retry waiting for another worker's claim
# While an order is in doubt, look again this often: it is adopted as soon as it shows.
IN_DOUBT_LOOK_MIN = timedelta(milliseconds=500)
IN_DOUBT_LOOK_MAX = timedelta(seconds=5)
HEARTBEAT_EVERY = 1.0  # seconds between heartbeats while one attempt runs
# A carrier's clock may run this far behind ours, and its creation times be truncated to
# the second: a package made since our first order left shows at most this much earlier.
CLOCK_SKEW = timedelta(seconds=2)

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


@dataclass
class _Held:
    """The claim an order attempt holds, as the next attempt must see it if this one
    ends unsettled."""

    claim: Claim


def _in_flight(busy: ClaimHeld) -> ApplicationError:
    wait = busy.lease_until - datetime.now(UTC)
    return ApplicationError(
        str(busy),
        type=ORDER_IN_FLIGHT,
        category=ApplicationErrorCategory.BENIGN,
        next_retry_delay=min(max(wait, timedelta(seconds=1)), CLAIM_RETRY_MAX),
    )


def _in_doubt(req: OrderLineInput, left: timedelta) -> ApplicationError:
    """Nothing found, but an earlier order may still be committed: look again soon, and
    buy only once the in-doubt window has passed."""
    return ApplicationError(
        f"order for {req.reference} in doubt at {req.carrier} for {left.total_seconds():.1f} s"
        " more: an earlier order may still be committed",
        type=ORDER_IN_DOUBT,
        category=ApplicationErrorCategory.BENIGN,
        next_retry_delay=min(max(left, IN_DOUBT_LOOK_MIN), IN_DOUBT_LOOK_MAX),
    )


def ours(found: CarrierLine, reference: str, since: datetime | None) -> bool:
    """Whether a package the carrier shows is the order for ``reference``: by our
    reference where the carrier carries one; else by being made at or after ``since``
    (our first order for the line left then, less the clocks' skew). Without ``since``
    (no record of our sends) only a reference can tell."""
    if found.reference is not None:
        return found.reference == reference
    return since is not None and found.ordered_at >= since


def _blank(req: OrderLineInput) -> Line:
    """The line an order is for, before the carrier has said anything of it."""
    return Line(
        seq=req.seq,
        reference=req.reference,
        product_id=req.product.id,
        carrier_product_id=req.product.carrier_product_id,
        allowance_bytes=req.product.allowance_bytes,
        validity_seconds=req.product.validity_seconds,
    )


def merged(line: Line, found: CarrierLine) -> Line:
    """Our line updated with what the carrier says of it: the one place the carrier's
    fields of a package map onto a line's."""
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
            # What the order cost, where the carrier's answer to it says (else as it was).
            "price_cents": line.price_cents if found.price_cents is None else found.price_cents,
            "currency": line.currency if found.currency is None else found.currency,
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

    def __init__(
        self,
        carriers: Mapping[str, Carrier],
        claims: OrderClaims | None = None,
        prices: CataloguePrices | None = None,
    ) -> None:
        self._carriers = carriers
        # Orders running in this worker, by reference (see order_line).
        self._ordering: dict[str, asyncio.Future[Line]] = {}
        self._claims = claims  # orders running in other workers (None: this one only)
        # The catalogue's prices now (None: the product spec's price is the catalogue's).
        self._prices = prices

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
        """Buy line ``seq`` — unless an earlier attempt has bought it already.

        Carriers have no idempotency keys, so an order whose claim (models/claims.py)
        shows an earlier order sent looks before it buys: an attempt whose response was
        lost has left a package of the line's product, made since that order left (see
        ``ours``); one that bought and could not tell Temporal has left the line's id on
        the claim, read back instead. Looking cannot see an earlier attempt that is still
        running, as on a loaded worker, where the server retries an attempt it has timed
        out while that attempt still waits to send its order: the 10,000-balance herd had
        23,365 order attempts complete after the server had given up on them, and bought
        5 packages twice. A retry in the same worker therefore joins the order in flight
        for its reference instead of starting another; the order runs to its end even
        when the attempt that started it is cancelled. A retry in another worker finds
        the order claimed (models/claims.py) and fails with ``OrderInFlight``, to be
        retried until the claim is gone. Nor can looking see an order the carrier has
        received but not yet committed: after an order whose outcome is unknown, a look
        that finds nothing fails with ``OrderInDoubt`` until the carrier's in-doubt
        window has passed since that order was sent, in whatever worker it is retried.

        The line comes back priced (``models/prices.py``): what the carrier's answer says
        it cost, else the catalogue's price of the product at this moment. A line adopted
        or read back is priced the same way.
        """
        ordering = self._ordering.get(req.reference)
        if ordering is None:
            ordering = asyncio.ensure_future(self._claimed_order(req))
            self._ordering[req.reference] = ordering
            ordering.add_done_callback(lambda _: self._ordering.pop(req.reference, None))
        return await asyncio.shield(ordering)

    async def _claimed_order(self, req: OrderLineInput) -> Line:
        return await self._priced(req, await self._settled_order(req))

    async def _priced(self, req: OrderLineInput, line: Line) -> Line:
        """The line with what buying it cost (models.prices.line_price)."""
        if line.price_cents is not None and line.currency is not None:
            return line
        prices = self._prices
        catalogue = await asyncio.to_thread(prices.of, req.product.id) if prices else None
        return line_price(line, catalogue, req.product)

    async def _settled_order(self, req: OrderLineInput) -> Line:
        carrier = self._carrier(req.carrier)
        claims = self._claims
        if claims is None:
            return await self._order_line(carrier, req, None)
        try:
            held = _Held(await asyncio.to_thread(claims.take, req.reference))
        except ClaimHeld as busy:
            raise _in_flight(busy) from None
        if held.claim.line_id is not None:
            return await self._bought(carrier, req, held.claim.line_id)
        try:
            line = await self._order_line(carrier, req, held)
        except ApplicationError:
            # Unsettled: the next attempt, in any process, takes the claim as it stands.
            await asyncio.to_thread(claims.hand_back, held.claim)
            raise
        assert line.line_id is not None
        await asyncio.to_thread(claims.settle, req.reference, line.line_id)
        return line

    async def _bought(self, carrier: Carrier, req: OrderLineInput, line_id: str) -> Line:
        """An earlier attempt bought the line and could not say so: read it back."""
        activity.logger.info("reading back %s, bought earlier for %s", line_id, req.reference)
        try:
            found = await carrier.get_line(line_id)
        except CarrierError as error:
            raise carrier_failure(error) from error
        return merged(_blank(req), found)

    async def _order_line(self, carrier: Carrier, req: OrderLineInput, held: _Held | None) -> Line:
        """Look if an order may have left before, then buy if nothing was found and
        nothing can still appear."""
        line = _blank(req)
        try:
            if held is None or held.claim.sent_at is not None:
                since = held.claim.sent_at - CLOCK_SKEW if held and held.claim.sent_at else None
                mine = [
                    found
                    for found in await carrier.open_lines(req.iccid, req.product.carrier_product_id)
                    if found.line_id not in req.known_line_ids and ours(found, req.reference, since)
                ]
                if mine:
                    if len(mine) > 1:
                        activity.logger.error(
                            "carrier holds %d packages for %s", len(mine), req.reference
                        )
                    first = min(mine, key=lambda found: found.ordered_at)
                    activity.logger.info("adopting %s for %s", first.line_id, req.reference)
                    return merged(line, first)
            before = held.claim if held else None
            if held is not None:
                await self._sending(carrier, req, held)
            token = SEND_BY.set(held.claim.send_by if held else None)
            try:
                placed = await carrier.order(
                    req.iccid, req.product.carrier_product_id, req.reference, req.start_at
                )
            except (CarrierRejected, CarrierUnavailable):
                if held is not None and before is not None:
                    held.claim = before  # no order was taken: as much in doubt as before
                raise
            finally:
                SEND_BY.reset(token)
        except CarrierError as error:
            raise carrier_failure(error) from error
        return merged(line, placed)

    async def _sending(self, carrier: Carrier, req: OrderLineInput, held: _Held) -> None:
        """Nothing found: buy only if no earlier order can still appear, and write down
        until when this one could, before it leaves."""
        assert self._claims is not None
        now = datetime.now(UTC)
        claim = held.claim
        if claim.in_doubt_until is not None and now < claim.in_doubt_until:
            raise _in_doubt(req, claim.in_doubt_until - now)
        if now > claim.send_by:
            raise CarrierUnavailable(req.carrier, f"order for {req.reference} not sent: late")
        window = timedelta(seconds=carrier.in_doubt_seconds)
        try:
            held.claim = await asyncio.to_thread(self._claims.sending, claim, window)
        except ClaimHeld as busy:
            raise _in_flight(busy) from None

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
            except CarrierOutcomeUnknown as unknown:
                # Perhaps an earlier request has taken effect meanwhile (a carrier slow to
                # commit answers none of them in time): what the carrier shows decides.
                found = await carrier.get_line(cmd.line.line_id)
                if found.status == "scheduled":
                    raise carrier_failure(unknown) from unknown
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
        return merged(cmd.line, found)

    @activity.defn(name="deactivate_line")
    @heartbeating
    async def deactivate_line(self, cmd: LineCommand) -> Line:
        """End the line at the carrier (idempotent); the result carries the carrier's end,
        and what it refunded where the carrier says. A line the carrier must not end
        (``LAST_BUNDLE``: it would take back an eSIM never installed) comes back as it was,
        ``left_on_esim`` saying why."""
        carrier = self._carrier(cmd.carrier)
        assert cmd.line.line_id is not None
        try:
            try:
                found = await carrier.deactivate(cmd.line.line_id)
            except CarrierRejected as refused:
                if refused.code == LAST_BUNDLE:
                    activity.logger.warning(
                        "leaving line %s on the eSIM: %s", cmd.line.seq, refused
                    )
                    return cmd.line.model_copy(update={"left_on_esim": refused.message})
                # Refused because it has ended meanwhile (by time, used up, or by our own
                # earlier request whose answer was lost)? Then there is nothing to end.
                found = await carrier.get_line(cmd.line.line_id)
                if found.status != "ended":
                    raise
            except CarrierOutcomeUnknown as unknown:
                found = await carrier.get_line(cmd.line.line_id)  # as in activate_line
                if found.status != "ended":
                    raise carrier_failure(unknown) from unknown
        except CarrierError as error:
            raise carrier_failure(error) from error
        ended = merged(cmd.line, found)
        state = cmd.end_state or LineState.cancelled
        return ended.model_copy(update={"state": state, "refund": found.refund})

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
