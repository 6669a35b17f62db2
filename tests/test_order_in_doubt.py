"""A carrier that commits an order after our client gave up on it sells the line once:
after an order whose outcome is unknown, a look that finds nothing is trusted only once
the carrier's in-doubt window has passed since that order was sent, whatever worker
retries it. Without faults nothing waits. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.carrier import ORDER_IN_DOUBT, CarrierActivities
from carriers.base import CarrierLine
from carriers.errors import CarrierOutcomeUnknown, CarrierUnavailable
from models.claims import ClaimHeld, OrderClaims
from models.db import migrate, session_scope
from models.tables import OrderClaim
from tests.test_carrier_heartbeats import order_input

WINDOW = 1.5  # the carrier's in-doubt window, seconds


class SlowCommitCarrier:
    """Commits each order ``commit_after`` seconds after it arrives; our client gives up
    after ``timeout`` (outcome unknown) when that is sooner. ``commit_after`` None: the
    request is lost on the way and never committed. Looks answer at once."""

    in_doubt_seconds = WINDOW

    def __init__(self, commit_after: float | None, timeout: float = 0.2) -> None:
        self.commit_after, self.timeout = commit_after, timeout
        self.sent: list[str] = []
        self.committed: list[CarrierLine] = []
        self.look_fails = False

    async def open_lines(self, iccid: str, product_id: str) -> list[CarrierLine]:
        if self.look_fails:
            raise CarrierUnavailable("telna", "HTTP 503")
        return list(self.committed)

    async def order(
        self, iccid: str, product_id: str, reference: str, start_at: datetime | None
    ) -> CarrierLine:
        self.sent.append(reference)
        line = CarrierLine(
            line_id=f"pkg-{len(self.sent)}",
            iccid=iccid,
            carrier_product_id=product_id,
            reference=None,  # as at the carriers: no field for it
            status="scheduled",
            ordered_at=datetime.now(UTC),
            allowance_bytes=3_000_000,
        )
        if self.commit_after is not None:
            asyncio.get_running_loop().call_later(self.commit_after, self.committed.append, line)
            if self.commit_after <= self.timeout:
                await asyncio.sleep(self.commit_after)
                return line
        await asyncio.sleep(self.timeout)
        raise CarrierOutcomeUnknown("telna", "POST /pcr/packages: ReadTimeout")


def worker(url: str, carrier: SlowCommitCarrier, owner: str) -> CarrierActivities:
    claims = OrderClaims(url, request_seconds=0.2, owner=owner)
    return CarrierActivities({"telna": carrier}, claims)  # type: ignore[dict-item]


async def attempt(activities: CarrierActivities) -> str:
    """One attempt of the order activity: the line id bought or adopted, else the type
    of the failure Temporal would retry."""
    try:
        line = await ActivityEnvironment().run(activities.order_line, order_input())
    except ApplicationError as failed:
        assert not failed.non_retryable
        return failed.type or "ApplicationError"
    assert line.line_id is not None
    return line.line_id


def claims_left(url: str) -> list[OrderClaim]:
    """Claims not settled: a settled one stays, holding the line bought."""
    with session_scope(url) as session:
        return [c for c in session.exec(select(OrderClaim)).all() if c.line_id is None]


async def test_an_order_committed_after_our_timeout_is_bought_once_by_any_worker(
    database_url: str,
) -> None:
    migrate(database_url)
    carrier = SlowCommitCarrier(commit_after=0.8)
    a, b = worker(database_url, carrier, "worker-a"), worker(database_url, carrier, "worker-b")
    assert await attempt(a) == "CarrierOutcomeUnknown"
    # The carrier has not committed it yet: looking finds nothing, in this worker or
    # another, and neither buys again.
    assert await attempt(a) == ORDER_IN_DOUBT
    assert await attempt(b) == ORDER_IN_DOUBT
    await asyncio.sleep(0.8)
    assert await attempt(b) == "pkg-1"
    assert carrier.sent == [order_input().reference]
    assert claims_left(database_url) == []


async def test_a_look_that_fails_keeps_the_purchase_in_doubt(database_url: str) -> None:
    migrate(database_url)
    carrier = SlowCommitCarrier(commit_after=1.0)
    a, b = worker(database_url, carrier, "worker-a"), worker(database_url, carrier, "worker-b")
    assert await attempt(a) == "CarrierOutcomeUnknown"
    carrier.look_fails = True
    assert await attempt(a) == "CarrierUnavailable"
    carrier.look_fails = False
    assert await attempt(b) == ORDER_IN_DOUBT
    await asyncio.sleep(1.0)
    assert await attempt(b) == "pkg-1"
    assert len(carrier.sent) == 1


async def test_nothing_found_once_the_window_has_passed_is_trusted(database_url: str) -> None:
    """An order lost on its way never appears: once the window has passed since it was
    sent, the line is bought (and only then)."""
    migrate(database_url)
    carrier = SlowCommitCarrier(commit_after=None)
    a = worker(database_url, carrier, "worker-a")
    assert await attempt(a) == "CarrierOutcomeUnknown"
    (claim,) = claims_left(database_url)
    assert claim.in_doubt_until is not None
    assert claim.in_doubt_until > datetime.now(UTC) + timedelta(seconds=WINDOW / 2)
    assert await attempt(a) == ORDER_IN_DOUBT
    await asyncio.sleep((claim.in_doubt_until - datetime.now(UTC)).total_seconds() + 0.05)
    carrier.commit_after = 0.0
    assert await attempt(a) == "pkg-2"
    assert len(carrier.sent) == 2 and len(carrier.committed) == 1
    assert claims_left(database_url) == []


async def test_without_faults_nothing_waits_and_nothing_is_left(database_url: str) -> None:
    migrate(database_url)
    carrier = SlowCommitCarrier(commit_after=0.0)
    a = worker(database_url, carrier, "worker-a")
    started = datetime.now(UTC)
    assert await attempt(a) == "pkg-1"
    assert datetime.now(UTC) - started < timedelta(seconds=WINDOW)
    assert claims_left(database_url) == []


async def test_an_order_the_carrier_refused_adds_no_doubt(database_url: str) -> None:
    """A 503 means the carrier took no order: the retry buys at once."""
    migrate(database_url)
    carrier = SlowCommitCarrier(commit_after=0.0)
    refusing = carrier.order

    async def unavailable(*args: object) -> CarrierLine:
        raise CarrierUnavailable("telna", "HTTP 503")

    carrier.order = unavailable  # type: ignore[method-assign]
    a = worker(database_url, carrier, "worker-a")
    assert await attempt(a) == "CarrierUnavailable"
    assert claims_left(database_url) == []
    carrier.order = refusing  # type: ignore[method-assign]
    assert await attempt(a) == "pkg-1"


async def test_a_holder_that_lost_its_lease_cannot_mark_a_send(database_url: str) -> None:
    """A worker stalled past its lease, whose claim another took, sends nothing."""
    migrate(database_url)
    stalled = OrderClaims(database_url, request_seconds=0.2, owner="worker-a")
    reference = order_input().reference
    claim = stalled.take(reference, now=datetime.now(UTC) - stalled.lease - timedelta(seconds=1))
    OrderClaims(database_url, request_seconds=0.2, owner="worker-b").take(reference)
    with pytest.raises(ClaimHeld):
        stalled.sending(claim, timedelta(seconds=WINDOW))
