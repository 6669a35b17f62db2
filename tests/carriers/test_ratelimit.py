"""The per-process carrier rate limit: no second ever carries more than the limit."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bench.limiter import let_go
from carriers.ratelimit import KEEPALIVE_SECONDS, RequestSpacer, limited
from carriers.telna import TelnaCarrier


async def test_a_burst_is_spaced_to_the_limit() -> None:
    sent: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(time.monotonic())
        return httpx.Response(200, json={"packages": [], "total": 0})

    transport = limited(httpx.MockTransport(answer), 20)
    async with httpx.AsyncClient(transport=transport, base_url="http://carrier") as client:
        await asyncio.gather(*(client.get("/x") for _ in range(30)))
    assert len(sent) == 30
    # No request leaves before its slot, 1/20 s after the one before it. A loop that
    # wakes the sleepers late lets every passed slot go at once (RequestSpacer), so two
    # sends can be closer than 1/20 s; the k-th is never sooner than k/20 s after the first.
    early = [k for k, t in enumerate(sent) if t - sent[0] < k * 0.05 - 0.002]
    assert not early, [round(sent[k] - sent[0], 4) for k in early]
    for start in sent:  # any one-second window holds at most 20 (+1 at its edge)
        assert sum(1 for t in sent if start <= t < start + 1.0) <= 21


def test_zero_is_no_limit_and_a_negative_limit_is_refused() -> None:
    inner = httpx.MockTransport(lambda request: httpx.Response(204))
    assert limited(inner, 0) is inner
    with pytest.raises(ValueError):
        limited(inner, -1)


async def test_the_setting_reaches_the_client() -> None:
    times: list[float] = []

    def answer(request: httpx.Request) -> httpx.Response:
        times.append(time.monotonic())
        return httpx.Response(200, json={"package_templates": [], "total": 0})

    carrier = TelnaCarrier(
        "http://telna", "key", transport=httpx.MockTransport(answer), rate_limit_per_second=10
    )
    try:
        await asyncio.gather(*(carrier.list_products() for _ in range(4)))
    finally:
        await carrier.aclose()
    assert times[-1] - times[0] >= 0.3 * 0.9


def _most_in_one_second(sent: list[float]) -> int:
    return max(sum(1 for t in sent if start <= t < start + 1.0) for start in sent)


async def test_a_busy_event_loop_still_gets_its_limit() -> None:
    """With every pass of the loop taking 20 ms (a worker amid a herd), a lock handed from
    waiter to waiter let one request through per pass: half of this limit."""
    sent = await let_go(RequestSpacer(100), 2.0, busy_callbacks=20, waiting=200)
    assert len(sent) >= 0.75 * 100 * 2.0, len(sent)
    assert _most_in_one_second(sent) <= 100


async def test_a_stalled_loop_does_not_release_a_second_over_the_limit() -> None:
    spacer = RequestSpacer(50)
    stall = asyncio.get_running_loop().call_later(0.3, time.sleep, 0.8)  # blocks the loop
    sent = await let_go(spacer, 2.5, busy_callbacks=0, waiting=200)
    stall.cancel()
    assert len(sent) >= 50
    assert _most_in_one_second(sent) <= 50


def test_idle_connections_are_let_go_of_before_a_server_would() -> None:
    """A request sent on a connection the server is closing gets no answer: an order's
    outcome would be unknown. Ours close after 2 s idle; uvicorn's after 5 s."""
    transport = limited(None, 0)
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert transport._pool._keepalive_expiry == KEEPALIVE_SECONDS < 5
