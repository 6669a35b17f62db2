"""The one async interface every carrier client implements, and the shapes it returns.

Shapes are normalised: bytes, timezone-aware UTC datetimes, and a line status of
``scheduled`` (ordered, not active), ``active`` or ``ended``. Carrier-specific units and
formats stay inside each client.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

LineStatus = Literal["scheduled", "active", "ended"]
# How the carrier moves an eSIM from one pass to the next (DESIGN section 5): ``queued``,
# it starts the next bought pass by itself when the current one ends; ``activated``, we
# start it; ``in_place``, one product per device, replaced by a product change.
Rotation = Literal["queued", "activated", "in_place"]
ResetRule = Literal["rolling", "utc_midnight", "local_midnight"]
# What ending a line refunded, where the carrier says (eSIM Go's revoke): credited to the
# account's ``balance``, returned to its ``inventory``, or ``none``.
Refund = Literal["balance", "inventory", "none"]


class CarrierProduct(BaseModel):
    """One pass in a carrier's catalogue, in the carrier's own product id."""

    carrier_product_id: str
    name: str
    allowance_bytes: int
    validity_seconds: int
    reset: ResetRule = "rolling"
    reset_utc_offset_minutes: int = 0
    throttle_kbps: int
    price_cents: int
    # ISO 4217 code of ``price_cents`` (minor units): where the catalogue names none, the
    # client's named choice (its setting ``{CARRIER}__CURRENCY``).
    currency: str = "USD"
    rotation: Rotation = "activated"


class CarrierLine(BaseModel):
    """One package (pass instance) on an ICCID, as the carrier sees it.

    Its allowance is positive: a rotation steers usage as a share of it. A package
    answer saying otherwise is malformed, and each client maps it as one it cannot read
    (never a line a workflow is handed)."""

    line_id: str
    iccid: str
    carrier_product_id: str
    reference: str | None
    status: LineStatus
    ordered_at: datetime
    activated_at: datetime | None = None
    ends_at: datetime | None = None
    ended_at: datetime | None = None
    allowance_bytes: int = Field(gt=0)
    used_bytes: int = 0
    # Set by a deactivation whose answer says what it refunded (None: the carrier did not).
    refund: Refund | None = None
    # What the order cost, where the carrier's answer to it says (eSIM Go's ``total`` and
    # ``currency``): minor units. None elsewhere: the catalogue's price is taken instead.
    price_cents: int | None = None
    currency: str | None = None


class LineUsage(BaseModel):
    """Usage of one line at one moment, as the carrier reports it."""

    line_id: str
    used_bytes: int
    allowance_bytes: int
    observed_at: datetime
    iccid: str | None = None


class UsagePage(BaseModel):
    """One page of a carrier's account-wide usage read; pages count from 1."""

    usage: list[LineUsage]
    page: int
    pages: int
    total: int


class Carrier(Protocol):
    """What the product needs from a carrier. Implementations raise only ``CarrierError``s.

    ``in_doubt_seconds``: the longest the carrier may take to commit a request it has
    received, so the longest after an unanswered order that it may still appear.
    """

    name: str
    in_doubt_seconds: float

    async def list_products(self) -> list[CarrierProduct]: ...

    async def order(
        self,
        iccid: str,
        carrier_product_id: str,
        reference: str,
        start_at: datetime | None = None,
    ) -> CarrierLine:
        """Buy a line. With ``start_at``, ask the carrier to start it by itself should we
        not activate it first: at that time (a queued start) or, at carriers that activate
        on attach, as soon as the eSIM has no active line. Our own activation still
        comes first; this is the safety net for an outage at switch time."""
        ...

    async def activate(self, line_id: str) -> CarrierLine: ...

    async def deactivate(self, line_id: str) -> CarrierLine: ...

    async def get_line(self, line_id: str) -> CarrierLine: ...

    async def find_lines(self, iccid: str) -> list[CarrierLine]: ...

    async def open_lines(self, iccid: str, carrier_product_id: str) -> list[CarrierLine]:
        """The product's lines on ``iccid`` that have not ended: what an order looks
        through for an earlier attempt of its own. Bounded by what is open, not by the
        eSIM's age, where the carrier can filter."""
        ...

    async def usage(self, line_id: str) -> LineUsage: ...

    async def aclose(self) -> None: ...


@runtime_checkable
class FleetUsage(Protocol):
    """A carrier that reports the usage of every line of the account in pages: what a
    usage poller needs where the carrier sends no usage webhooks (Webbing)."""

    async def usage_page(self, page: int, since: date, page_size: int) -> UsagePage:
        """Page ``page`` (``page_size`` lines) of the usage of every line active on or
        after the UTC date ``since``; a page past the end is empty."""
        ...
