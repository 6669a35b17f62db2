"""The engine's one-product-per-device hooks on an injected clock: a change in place and a
suspension (what the Webbing-like simulator is built on)."""

from __future__ import annotations

import json

import pytest

from models.identifiers import make_iccid
from simulators.core import CarrierEngine
from simulators.errors import WrongState
from simulators.records import Product

T0 = 1_800_000_000.0
ICCID = make_iccid("894400000000000021")
# Real products: the configured latency applies (10 s here), not a fraction of the validity.
DAILY = Product("daily", "Daily", 10**9, 86_400, 128, 150)
BIG = Product("big", "Big", 3 * 10**9, 86_400, 512, 350)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> CarrierEngine:
    engine = CarrierEngine([DAILY, BIG], clock=clock, seed=3, activation_latency=(10, 10))
    engine.add_esims([ICCID])
    return engine


def change(engine: CarrierEngine, product: str) -> str:
    package = engine.order(ICCID, product, None, in_place=True)
    engine.activate(package.id)
    return package.id


def actions(engine: CarrierEngine) -> list[tuple[str, float, str]]:
    return [(e.action, e.at, e.package_id) for e in engine.ledger(ICCID)]


def test_a_change_is_bought_when_it_takes_effect_and_ends_the_product_before_it(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    first = change(engine, "daily")
    assert actions(engine) == []  # a pending change is no purchase yet
    clock.now = T0 + 100
    second = change(engine, "big")
    clock.now = T0 + 109
    assert engine.package(first).status == "ACTIVE"  # the old product serves meanwhile
    clock.now = T0 + 200
    assert actions(engine) == [
        ("order", T0 + 10, first),
        ("activate", T0 + 10, first),
        ("order", T0 + 110, second),
        ("activate", T0 + 110, second),
        ("deactivate", T0 + 110, first),
    ]
    intervals = [(i.state, i.start, i.end) for i in engine.timeline(ICCID)]
    assert intervals == [("high_speed", T0 + 10, None)]


def test_changes_take_effect_in_the_order_they_were_asked_for(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    slow = change(engine, "daily")
    engine.set_activation_latency(1, 1)
    fast = change(engine, "big")  # its own latency would put it first
    assert engine.package(fast).activation_due_at == engine.package(slow).activation_due_at
    clock.now = T0 + 20
    assert engine.package(slow).status == "TERMINATED"
    assert engine.package(fast).status == "ACTIVE"
    assert [a for a, _, _ in actions(engine)] == [
        "order",
        "activate",
        "order",
        "activate",
        "deactivate",
    ]


def test_a_suspension_ends_the_product_withdraws_pending_changes_and_refuses_orders(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    serving = change(engine, "daily")
    clock.now = T0 + 50
    pending = change(engine, "big")
    clock.now = T0 + 55
    sim = engine.suspend(ICCID)
    assert (sim.suspended, sim.status_changed_at) == (True, T0 + 55)
    assert engine.suspend(ICCID).status_changed_at == T0 + 55  # idempotent
    assert engine.package(pending).status == "TERMINATED"
    with pytest.raises(WrongState):
        engine.order(ICCID, "daily", None, in_place=True)
    clock.now = T0 + 100
    assert actions(engine) == [
        ("order", T0 + 10, serving),
        ("activate", T0 + 10, serving),
        ("deactivate", T0 + 55, serving),
    ]
    resumed = engine.resume(ICCID)
    assert (resumed.suspended, resumed.status_changed_at) == (False, T0 + 100)
    assert engine.resume(ICCID).status_changed_at == T0 + 100
    assert all(p.status == "TERMINATED" for p in engine.packages(ICCID))
    states = [i.state for i in engine.timeline(ICCID)]
    assert states == ["high_speed", "none"]


def test_a_pass_whose_window_runs_out_stays_throttled_until_a_change_replaces_it(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    first = change(engine, "daily")
    clock.now = T0 + 86_500  # its window ended at T0 + 86,410
    assert engine.package(first).status == "ACTIVE" and engine.package(first).exhausted
    second = change(engine, "daily")  # same product: a renewal
    clock.now = T0 + 90_000
    assert [(a, p) for a, _, p in actions(engine)[2:]] == [
        ("exhaust", first),
        ("order", second),
        ("activate", second),
        ("deactivate", first),
    ]
    assert [i.state for i in engine.timeline(ICCID)] == ["high_speed", "throttled", "high_speed"]


def test_suspension_and_in_place_changes_survive_a_snapshot(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    change(engine, "daily")
    clock.now = T0 + 20
    pending = change(engine, "big")
    saved = json.loads(json.dumps(engine.to_snapshot()))
    restored = CarrierEngine.from_snapshot(saved, [DAILY, BIG], clock=clock)
    assert restored.sim(ICCID).added_at == T0
    clock.now = T0 + 40
    assert restored.package(pending).status == "ACTIVE"
    assert [e.action for e in restored.ledger(ICCID)][-2:] == ["activate", "deactivate"]
    restored.suspend(ICCID)
    again = CarrierEngine.from_snapshot(restored.to_snapshot(), [DAILY, BIG], clock=clock)
    assert again.sim(ICCID).suspended and again.iccids() == [ICCID]
