"""An order retried in another worker process while the first attempt still runs buys
nothing: the claim in the database holds it off until the first attempt is done, then it
adopts what that attempt bought. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import select
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.carrier import ORDER_IN_FLIGHT, CarrierActivities
from carriers.ratelimit import SEND_BY, RateLimitedTransport
from models import claims as claims_module
from models.claims import OrderClaims
from models.db import migrate, session_scope
from models.tables import OrderClaim
from tests.test_carrier_heartbeats import OrderingCarrier, order_input


def worker(url: str, carrier: OrderingCarrier, owner: str) -> CarrierActivities:
    """The carrier activities of one worker process."""
    claims = OrderClaims(url, request_seconds=1.0, owner=owner)
    return CarrierActivities({"telna": carrier}, claims)  # type: ignore[dict-item]


def claims_left(url: str) -> list[str]:
    """Owners of the claims not settled (a settled claim stays, holding the line)."""
    with session_scope(url) as session:
        claims = session.exec(select(OrderClaim)).all()
        return [claim.owner for claim in claims if claim.line_id is None]


async def test_a_retry_in_another_worker_waits_for_the_order_in_flight(database_url: str) -> None:
    migrate(database_url)
    carrier = OrderingCarrier(0.5)
    first = worker(database_url, carrier, "worker-a")
    second = worker(database_url, carrier, "worker-b")
    running = asyncio.create_task(ActivityEnvironment().run(first.order_line, order_input()))
    await asyncio.sleep(0.2)
    # Looking now would find nothing, and buying would buy the line twice.
    with pytest.raises(ApplicationError) as refused:
        await ActivityEnvironment().run(second.order_line, order_input())
    assert refused.value.type == ORDER_IN_FLIGHT and not refused.value.non_retryable
    assert "worker-a" in str(refused.value)
    assert refused.value.next_retry_delay is not None
    assert refused.value.next_retry_delay <= timedelta(seconds=30)
    bought = await running
    # Temporal's next retry: the claim is settled, the line bought is read back.
    assert claims_left(database_url) == []
    adopted = await ActivityEnvironment().run(second.order_line, order_input())
    assert adopted.line_id == bought.line_id == "pkg-1"
    assert len(carrier.placed) == 1
    assert claims_left(database_url) == []


async def test_a_claim_left_by_a_dead_worker_lapses(database_url: str) -> None:
    migrate(database_url)
    carrier = OrderingCarrier(0.0)
    dead = OrderClaims(database_url, request_seconds=1.0, owner="worker-a")
    reference = order_input().reference
    dead.take(reference, now=datetime.now(UTC) - dead.lease - timedelta(seconds=1))
    assert claims_left(database_url) == ["worker-a"]
    line = await ActivityEnvironment().run(
        worker(database_url, carrier, "worker-b").order_line, order_input()
    )
    assert line.line_id == "pkg-1" and len(carrier.placed) == 1
    assert claims_left(database_url) == []


async def test_a_live_claim_is_not_taken_over(database_url: str) -> None:
    migrate(database_url)
    reference = order_input().reference
    OrderClaims(database_url, request_seconds=1.0, owner="worker-a").take(reference)
    other = OrderClaims(database_url, request_seconds=1.0, owner="worker-b")
    with pytest.raises(claims_module.ClaimHeld):
        other.take(reference)
    # Its own process may take it again (an attempt of its own has ended).
    OrderClaims(database_url, request_seconds=1.0, owner="worker-a").take(reference)
    assert claims_left(database_url) == ["worker-a"]


class SlowLookCarrier(OrderingCarrier):
    """Looks slowly, as a carrier behind a long queue of requests."""

    async def open_lines(self, iccid: str, product_id: str) -> list:  # type: ignore[type-arg]
        await asyncio.sleep(0.3)
        return await super().open_lines(iccid, product_id)


async def test_an_order_that_could_outlast_its_claim_is_not_sent(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    migrate(database_url)
    monkeypatch.setattr(claims_module, "SEND_WINDOW", timedelta(seconds=0.1))
    carrier = SlowLookCarrier(0.0)
    # An order sent long ago by a worker since gone, never answered: the next one looks.
    gone, past = OrderClaims(database_url, 1.0, owner="worker-z"), datetime(2026, 1, 1, tzinfo=UTC)
    claim = gone.take(order_input().reference, now=past)
    gone.hand_back(gone.sending(claim, timedelta(seconds=1), now=past), now=past)
    with pytest.raises(ApplicationError) as late:
        await ActivityEnvironment().run(
            worker(database_url, carrier, "worker-a").order_line, order_input()
        )
    assert late.value.type == "CarrierUnavailable" and "not sent" in str(late.value)
    assert carrier.placed == []


async def test_a_request_past_its_send_by_never_leaves_the_rate_limiter() -> None:
    sent: list[httpx.Request] = []
    inner = httpx.MockTransport(lambda request: sent.append(request) or httpx.Response(200))
    transport = RateLimitedTransport(inner, per_second=1000)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://carrier/")).status_code == 200
        token = SEND_BY.set(datetime.now(UTC) - timedelta(seconds=1))
        try:
            with pytest.raises(httpx.PoolTimeout, match="not sent"):
                await client.post("http://carrier/orders")
        finally:
            SEND_BY.reset(token)
        assert (await client.post("http://carrier/orders")).status_code == 200
    assert [r.method for r in sent] == ["GET", "POST"]


async def test_a_claim_of_a_process_gone_from_this_host_is_taken_at_once(
    database_url: str,
) -> None:
    """A worker killed and restarted on the same host does not wait for its lease; a
    live process here, or any process elsewhere, keeps its claim until the lease ends."""
    migrate(database_url)
    ended = subprocess.Popen(["true"])
    ended.wait()
    host = socket.gethostname()[:40]
    holders = {
        "b:1": f"{host}:{os.getpid()}:aaaaaaaa",  # alive: this test's process
        "b:2": f"elsewhere:{ended.pid}:aaaaaaaa",  # cannot be told from here
        "b:3": f"{host}:{ended.pid}:aaaaaaaa",  # gone
    }
    for reference, owner in holders.items():
        OrderClaims(database_url, 1.0, owner=owner).take(reference)
    restarted = OrderClaims(database_url, 1.0, owner=f"{host}:{os.getpid()}:bbbbbbbb")
    for reference in ("b:1", "b:2"):
        with pytest.raises(claims_module.ClaimHeld):
            restarted.take(reference)
    restarted.take("b:3")
    kept = [holders["b:1"], holders["b:2"], restarted.owner]
    assert sorted(claims_left(database_url)) == sorted(kept)


def test_settled_claims_are_let_go_of_after_a_day(database_url: str) -> None:
    migrate(database_url)
    claims = OrderClaims(database_url, request_seconds=1.0, owner="worker-a")
    long_ago = datetime.now(UTC) - claims_module.KEEP_SETTLED - timedelta(minutes=1)
    claims.take("b:1", now=long_ago)
    claims.settle("b:1", "pkg-1", now=long_ago)
    claims.take("b:2")
    claims.settle("b:2", "pkg-2")
    with session_scope(database_url) as session:
        kept = {claim.reference: claim.line_id for claim in session.exec(select(OrderClaim))}
    assert kept == {"b:2": "pkg-2"}
