"""The per-process carrier rate limit: no second ever carries more than the limit."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from carriers.ratelimit import limited
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
    gaps = [b - a for a, b in zip(sent, sent[1:], strict=False)]
    assert min(gaps) >= 0.05 * 0.9, min(gaps)  # 1/20 s apart, timer slack aside
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
