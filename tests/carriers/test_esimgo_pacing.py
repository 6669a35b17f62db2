"""The eSIM Go pacer: a spent window holds requests until it resets, a 429 for its
Retry-After; on a fake clock, so nothing sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from carriers.esimgo_pacing import PacedTransport, RateWindow, WindowPacer, reset_time

T0 = datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = T0
        self.slept: list[float] = []

    def __call__(self) -> datetime:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += timedelta(seconds=seconds)


def window(remaining: int, reset_in: float, cost: int = 1) -> dict[str, str]:
    reset = (T0 + timedelta(seconds=reset_in)).isoformat().replace("+00:00", "Z")
    return {
        "X-Ratelimit-Limit": "10",
        "X-Ratelimit-Remaining": str(remaining),
        "X-Ratelimit-Reset": reset,
        "X-Ratelimit-Cost": str(cost),
    }


def test_a_window_with_tokens_left_holds_nothing() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(200, window(remaining=3, reset_in=0.4))
    assert pacer.delay() == 0.0
    assert pacer.last == RateWindow(10, 3, T0 + timedelta(seconds=0.4), 1)


async def test_a_spent_window_holds_the_next_request_until_it_resets() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(200, window(remaining=0, reset_in=0.4, cost=5))
    assert pacer.delay() == pytest.approx(0.4)
    await pacer.wait()
    assert clock.slept == [pytest.approx(0.4)]
    assert pacer.delay() == 0.0
    await pacer.wait()  # the window has reset: no more waiting
    assert len(clock.slept) == 1


def test_a_reset_beyond_one_window_is_a_clock_apart_and_waits_one_window_at_most() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(200, window(remaining=0, reset_in=30))
    assert pacer.delay() == pytest.approx(1.0)


def test_a_reset_already_past_holds_nothing() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(200, window(remaining=0, reset_in=-2))
    assert pacer.delay() == 0.0


def test_a_spent_window_without_a_readable_reset_waits_one_window() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(200, {"X-Ratelimit-Remaining": "0", "X-Ratelimit-Reset": "soon"})
    assert pacer.delay() == pytest.approx(1.0)


def test_a_429_holds_every_request_for_its_retry_after() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(429, {"Retry-After": "3"})
    assert pacer.delay() == pytest.approx(3.0)
    pacer.observe(200, window(remaining=0, reset_in=0.5))  # a shorter hold changes nothing
    assert pacer.delay() == pytest.approx(3.0)
    clock.now += timedelta(seconds=2)
    assert pacer.delay() == pytest.approx(1.0)


def test_a_429_without_retry_after_waits_one_window_and_a_huge_one_is_capped() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(429, {})
    assert pacer.delay() == pytest.approx(1.0)
    pacer.observe(429, {"Retry-After": "86400"})
    assert pacer.delay() == pytest.approx(30.0)


def test_answers_without_headers_hold_nothing() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    pacer.observe(200, {})
    assert pacer.delay() == 0.0
    assert pacer.last is not None and not pacer.last.complete


def test_reset_times_read_as_iso_8601_utc() -> None:
    assert reset_time("2026-12-07T08:00:01Z") == T0 + timedelta(seconds=1)
    assert reset_time("2026-12-07T08:00:01.500") == T0 + timedelta(seconds=1.5)
    assert reset_time("1765094401") is None
    assert reset_time(None) is None


async def test_the_transport_waits_before_sending_and_learns_from_each_answer() -> None:
    clock = Clock()
    pacer = WindowPacer(clock, clock.sleep)
    sent: list[datetime] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(clock.now)
        return httpx.Response(200, json={}, headers=window(remaining=0, reset_in=0.25))

    async with httpx.AsyncClient(transport=PacedTransport(httpx.MockTransport(answer), pacer)) as c:
        await c.get("http://carrier/catalogue")
        await c.get("http://carrier/catalogue")
    assert sent == [T0, T0 + timedelta(seconds=0.25)]
