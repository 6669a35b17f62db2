"""Queued packages in the carrier engine (eSIM Go's bundles): start on attach, hand over at
depletion without a throttled gap, shortest validity first, first-use alerts."""

from __future__ import annotations

import pytest

from models.identifiers import make_iccid
from simulators.core import CarrierEngine
from simulators.records import FIRST_USE, Alert, Product

T0 = 1_800_000_000.0
ICCID = make_iccid("894400000000000002")
TEN = Product("ten", "10 s", 1000, 10, 128, 1)
THIRTY = Product("thirty", "30 s", 3000, 30, 128, 1)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def alerts() -> list[Alert]:
    return []


@pytest.fixture
def engine(clock: FakeClock, alerts: list[Alert]) -> CarrierEngine:
    engine = CarrierEngine([TEN, THIRTY], clock=clock, seed=3, sink=alerts.append)
    engine.first_use_bytes = 100
    engine.add_esims([ICCID])
    return engine


def test_a_queued_package_starts_when_processing_ends(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    package = engine.order(ICCID, "ten", None, queued=True)
    assert package.available_at is not None and T0 < package.available_at <= T0 + 0.5
    assert package.status == "NOT_ACTIVE"
    clock.now = T0 + 1
    engine.advance()
    assert package.status == "ACTIVE" and package.activated_at == package.available_at
    assert package.expires_at == package.activated_at + 10  # rolling from the start


def test_the_next_queued_package_starts_at_depletion_without_a_throttled_gap(
    engine: CarrierEngine, clock: FakeClock, alerts: list[Alert]
) -> None:
    engine.set_traffic(500, ICCID)  # the 1000-byte pass is used up 2 s after it starts
    first = engine.order(ICCID, "ten", None, queued=True)
    second = engine.order(ICCID, "ten", None, queued=True)
    clock.now = T0 + 1
    engine.advance()
    assert first.activated_at is not None
    clock.now = first.activated_at + 3
    engine.advance()
    assert second.activated_at == first.activated_at + 2
    assert first.status == "ACTIVE" and first.exhausted  # depleted, within its duration
    assert [i.state for i in engine.timeline(ICCID)] == ["high_speed"]
    marks = [(a.package_id, a.threshold_percent) for a in alerts]
    assert marks[:4] == [(first.id, FIRST_USE), (first.id, 50), (first.id, 80), (first.id, 100)]
    assert (second.id, FIRST_USE) in marks
    clock.now = T0 + 30
    engine.advance()
    states = [i.state for i in engine.timeline(ICCID)]
    assert states == ["high_speed", "throttled", "none"]


def test_the_shortest_queued_package_starts_first_and_ties_in_order(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    serving = engine.order(ICCID, "ten", None, queued=True)
    clock.now = T0 + 1
    engine.advance()
    long = engine.order(ICCID, "thirty", None, queued=True)
    short_a = engine.order(ICCID, "ten", None, queued=True)
    short_b = engine.order(ICCID, "ten", None, queued=True)
    assert serving.expires_at is not None
    clock.now = serving.expires_at
    engine.advance()
    assert [p.status for p in (long, short_a, short_b)] == ["NOT_ACTIVE", "ACTIVE", "NOT_ACTIVE"]
    clock.now = serving.expires_at + 10
    engine.advance()
    assert short_b.status == "ACTIVE" and long.status == "NOT_ACTIVE"


def test_extra_state_survives_a_snapshot(engine: CarrierEngine) -> None:
    engine.extra["balance_cents"] = 123
    engine.order(ICCID, "ten", None, queued=True)
    restored = CarrierEngine.from_snapshot(engine.to_snapshot(), [TEN, THIRTY])
    assert restored.extra == {"balance_cents": 123}
    assert restored.packages(ICCID)[0].queued
