"""Carrier activities heartbeat while a slow call runs, so a dead worker is noticed fast;
an order attempt retried while it still runs does not buy twice."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import carrier as carrier_activities
from activities.carrier import CarrierActivities
from carriers.base import CarrierLine
from carriers.errors import CarrierRejected
from models.payloads import Line, LineCommand, LineState, OrderLineInput
from tests.workflows.test_balance_long_term import DAILY


class SlowCarrier:
    """Answers ``deactivate`` after ``seconds``; nothing else is called."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def deactivate(self, line_id: str) -> CarrierLine:
        await asyncio.sleep(self.seconds)
        now = datetime.now(UTC)
        return CarrierLine(
            line_id=line_id,
            iccid="8944000000000000001",
            carrier_product_id="compressed-30s",
            reference="b:1",
            status="ended",
            ordered_at=now - timedelta(seconds=10),
            activated_at=now - timedelta(seconds=10),
            ended_at=now,
            allowance_bytes=3_000_000,
        )


def command() -> LineCommand:
    line = Line(
        seq=1,
        reference="b:1",
        product_id="telna-compressed-30s",
        carrier_product_id="compressed-30s",
        allowance_bytes=3_000_000,
        validity_seconds=30,
        line_id="pkg-1",
        state=LineState.active,
    )
    return LineCommand(carrier="telna", iccid="8944000000000000001", line=line)


async def run(seconds: float, heartbeat_timeout: timedelta | None) -> list[Any]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=heartbeat_timeout)
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    activities = CarrierActivities({"telna": SlowCarrier(seconds)})  # type: ignore[dict-item]
    ended = await env.run(activities.deactivate_line, command())
    assert ended.state == LineState.cancelled
    return beats


async def test_a_slow_call_heartbeats_every_second(monkeypatch: Any) -> None:
    monkeypatch.setattr(carrier_activities, "HEARTBEAT_EVERY", 0.1)
    assert len(await run(0.55, timedelta(seconds=5))) == 5


async def test_a_fast_call_or_no_heartbeat_timeout_sends_none(monkeypatch: Any) -> None:
    monkeypatch.setattr(carrier_activities, "HEARTBEAT_EVERY", 0.1)
    assert await run(0.05, timedelta(seconds=5)) == []
    assert await run(0.35, None) == []


class OrderingCarrier:
    """Finds nothing for a while, then the package its one order placed; counts orders."""

    in_doubt_seconds = 1.0

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.placed: list[CarrierLine] = []

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        return list(self.placed)

    async def open_lines(self, iccid: str, product_id: str) -> list[CarrierLine]:
        return [line for line in self.placed if line.status != "ended"]

    async def get_line(self, line_id: str) -> CarrierLine:
        (line,) = [line for line in self.placed if line.line_id == line_id]
        return line

    async def order(
        self, iccid: str, product_id: str, reference: str, start_at: datetime | None
    ) -> CarrierLine:
        await asyncio.sleep(self.seconds)  # the request waits, as on a loaded worker
        line = CarrierLine(
            line_id=f"pkg-{len(self.placed) + 1}",
            iccid=iccid,
            carrier_product_id=product_id,
            reference=reference,
            status="scheduled",
            ordered_at=datetime.now(UTC),
            allowance_bytes=3_000_000,
        )
        self.placed.append(line)
        return line


def order_input() -> OrderLineInput:
    return OrderLineInput(
        balance_id="b", iccid="8944000000000000001", carrier="telna", seq=2, product=DAILY
    )


async def test_a_retry_beside_a_running_order_attempt_joins_it_and_buys_once() -> None:
    """The server retries an attempt it gave up on while that one still runs: looking
    first finds nothing yet, so only joining the running order prevents a second buy."""
    carrier = OrderingCarrier(0.3)
    activities = CarrierActivities({"telna": carrier})  # type: ignore[dict-item]
    first = asyncio.create_task(ActivityEnvironment().run(activities.order_line, order_input()))
    await asyncio.sleep(0.1)
    retry = ActivityEnvironment().run(activities.order_line, order_input())
    lines = await asyncio.gather(first, retry)
    assert len(carrier.placed) == 1
    assert {line.line_id for line in lines} == {"pkg-1"}


async def test_an_order_outlives_its_cancelled_attempt_and_the_retry_gets_it() -> None:
    carrier = OrderingCarrier(0.3)
    activities = CarrierActivities({"telna": carrier})  # type: ignore[dict-item]
    env = ActivityEnvironment()
    first = asyncio.create_task(env.run(activities.order_line, order_input()))
    await asyncio.sleep(0.1)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    # The request was on its way: abandoning it would leave the purchase's fate unknown.
    await asyncio.sleep(0.4)
    assert [line.line_id for line in carrier.placed] == ["pkg-1"]
    # Done, nothing is held: the retry looks, finds the package and adopts it.
    line = await ActivityEnvironment().run(activities.order_line, order_input())
    assert line.line_id == "pkg-1" and len(carrier.placed) == 1


class EndedMeanwhileCarrier(SlowCarrier):
    """Refuses the end of a line that has ended by itself meanwhile (eSIM Go: 400 "this
    assignment has already ended"); a read shows it ended, or still ``status``."""

    def __init__(self, status: str) -> None:
        super().__init__(0)
        self.status = status

    async def deactivate(self, line_id: str) -> CarrierLine:
        raise CarrierRejected("esimgo", "this assignment has already ended", code="400")

    async def get_line(self, line_id: str) -> CarrierLine:
        ended = await SlowCarrier.deactivate(self, line_id)
        return ended.model_copy(update={"status": self.status})


async def test_ending_a_line_that_ended_meanwhile_is_done_and_a_real_refusal_is_not() -> None:
    """A line that ended by itself between our read and our revoke (or by our own earlier
    revoke whose answer was lost) needs nothing more: it is not a failure that would fail
    the balance's cancel. A refusal of a line still open is one."""
    env = ActivityEnvironment()
    done = CarrierActivities({"telna": EndedMeanwhileCarrier("ended")})  # type: ignore[dict-item]
    ended = await env.run(done.deactivate_line, command())
    assert ended.state == LineState.cancelled and ended.ended_at is not None
    still = CarrierActivities({"telna": EndedMeanwhileCarrier("active")})  # type: ignore[dict-item]
    with pytest.raises(ApplicationError, match="already ended"):
        await env.run(still.deactivate_line, command())
