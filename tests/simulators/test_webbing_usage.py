"""Webbing's usage readings on an injected clock: batches, lag, throttled bytes, last
reading, and usage per UTC day."""

from __future__ import annotations

import pytest

from models.identifiers import make_iccid
from simulators.core import CarrierEngine
from simulators.records import Product
from simulators.webbing_usage import DAY, UsageLag, UsageMeter, usage_by_day

T0 = 1_800_000_000.0
ICCID = make_iccid("894400000000000011")
# 1000 bytes for 100 s, throttled to 8 kbps = 1000 B/s; compressed: it takes the compressed
# lag, and activates 1-5 s after the request whatever the configured latency.
SHORT = Product("short", "Short", 1000, 100, 8, 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_readings_come_in_batches_and_count_throttled_traffic_once_used_up() -> None:
    clock = FakeClock()
    engine = CarrierEngine([SHORT], clock=clock, seed=1, activation_latency=(0, 0))
    engine.add_esims([ICCID])
    meter = UsageMeter(engine, UsageLag(compressed_seconds=10))
    package = engine.order(ICCID, "short", "b:1")
    meter.track(package)
    engine.activate(package.id)
    clock.now = package.activation_due_at or 0.0
    start = clock.now
    engine.set_traffic(50, ICCID)  # used up after 20 s, then throttled (50 B/s < the cap)

    def tick_until(t: float) -> None:
        while clock.now < t:
            clock.now = min(t, clock.now + 0.5)
            meter.take_readings()

    tick_until(start + 0.5)
    assert (meter.reading(package).at, meter.reading(package).high_speed_bytes) == (
        start + 0.5,
        25,
    )
    tick_until(start + 10)
    assert meter.reading(package).high_speed_bytes == 25  # the next batch is not due yet
    tick_until(start + 10.5)
    assert meter.reading(package).high_speed_bytes == 525
    tick_until(start + 30.5)
    reading = meter.reading(package)
    assert (reading.high_speed_bytes, reading.throttled_bytes) == (1000, pytest.approx(50 * 10.5))

    engine.terminate(package.id)
    ended_at = clock.now
    tick_until(start + 45)
    final = meter.reading(package)
    assert final.at >= ended_at
    assert final.throttled_bytes == pytest.approx(50 * (ended_at - start - 20))
    tick_until(start + 80)
    assert meter.reading(package) == final  # an ended pass is read once more, then kept


def test_zero_lag_reads_live_and_passes_not_yet_serving_report_nothing() -> None:
    clock = FakeClock()
    engine = CarrierEngine([SHORT], clock=clock, seed=1, activation_latency=(0, 0))
    engine.add_esims([ICCID])
    meter = UsageMeter(engine, UsageLag(compressed_seconds=0))
    waiting = engine.order(ICCID, "short", None)
    assert (meter.reading(waiting).at, meter.reading(waiting).high_speed_bytes) == (T0, 0)
    engine.activate(waiting.id)
    clock.now = waiting.activation_due_at or 0.0
    engine.set_traffic(10, ICCID)
    clock.now += 7
    assert meter.reading(waiting).high_speed_bytes == 70
    assert meter.reading(waiting).at == clock.now


def test_usage_by_day_spreads_a_pass_over_the_utc_days_it_served() -> None:
    clock = FakeClock()
    midnight = T0 - T0 % DAY + DAY
    clock.now = midnight - 30
    engine = CarrierEngine([SHORT], clock=clock, seed=1, activation_latency=(0, 0))
    engine.add_esims([ICCID])
    meter = UsageMeter(engine, UsageLag(compressed_seconds=0))
    package = engine.order(ICCID, "short", None, in_place=True)
    meter.track(package)
    engine.activate(package.id)
    clock.now = start = package.activation_due_at or 0.0
    engine.set_traffic(10, ICCID)  # 10 B/s for 40 s, across 00:00 UTC
    clock.now = start + 40
    before = midnight - start
    days = usage_by_day(engine.packages(ICCID), meter, midnight - DAY, midnight + DAY)
    assert days == {
        midnight - DAY: pytest.approx(10 * before),
        midnight: pytest.approx(10 * (40 - before)),
    }
    assert usage_by_day(engine.packages(ICCID), meter, midnight, midnight + DAY) == {
        midnight: pytest.approx(10 * (40 - before))
    }
