"""The engine's windows follow each product's reset rule; queued starts are exact."""

from __future__ import annotations

import json

import pytest

from models.identifiers import make_iccid
from simulators.core import CarrierEngine
from simulators.records import Product

# 1_800_000_000 is a multiple of 30: a boundary of every 30 s "day".
T0 = 1_800_000_000.0
UTC_DAY = Product("utc30", "30 s, UTC day", 1000, 30, 128, 1, "utc_midnight")
UTC8_DAY = Product("sgt30", "30 s, UTC+8 day", 1000, 30, 128, 1, "local_midnight", 480)
ROLLING = Product("roll30", "30 s rolling", 1000, 30, 128, 1)
REAL_UTC_DAY = Product("daily-utc", "Daily, UTC day", 10**9, 86_400, 128, 150, "utc_midnight")


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def engine(clock: FakeClock) -> CarrierEngine:
    return CarrierEngine([UTC_DAY, UTC8_DAY, ROLLING, REAL_UTC_DAY], clock=clock, seed=3)


def iccid(n: int) -> str:
    return make_iccid(f"89440000000{n:07d}")


def activated_at(engine: CarrierEngine, clock: FakeClock, sim: str, product: str) -> str:
    engine.add_esims([sim])
    package = engine.order(sim, product, None)
    engine.activate(package.id)
    assert package.activation_due_at is not None
    clock.now = package.activation_due_at
    engine.advance()
    return package.id


def test_a_compressed_utc_midnight_product_ends_every_line_in_the_same_second(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    ends = set()
    for n, start in enumerate((T0 + 1, T0 + 9.5, T0 + 20, T0 + 28)):
        clock.now = start
        package = engine.package(activated_at(engine, clock, iccid(n), "utc30"))
        assert package.activated_at is not None and package.activated_at < T0 + 30
        ends.add(package.expires_at)
    assert ends == {T0 + 30}
    clock.now = T0 + 31
    assert {e.at for e in engine.ledger() if e.action == "expire"} == {T0 + 30}


def test_local_midnight_and_rolling_windows(engine: CarrierEngine, clock: FakeClock) -> None:
    clock.now = T0 + 1
    sgt = engine.package(activated_at(engine, clock, iccid(10), "sgt30"))
    assert sgt.expires_at == pytest.approx(T0 + 20, abs=1e-6)  # 10 s before UTC boundaries
    rolling = engine.package(activated_at(engine, clock, iccid(11), "roll30"))
    assert rolling.activated_at is not None
    assert rolling.expires_at == rolling.activated_at + 30


def test_a_real_line_activated_at_23_59_utc_ends_at_midnight(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    midnight = 86_400 * (int(T0) // 86_400 + 1)
    engine.set_activation_latency(0, 0)
    clock.now = midnight - 60
    package = engine.package(activated_at(engine, clock, iccid(20), "daily-utc"))
    assert package.expires_at == midnight
    clock.now = midnight
    assert engine.package(package.id).status == "TERMINATED"


def test_a_queued_start_activates_exactly_then_and_survives_a_snapshot(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    engine.add_esims([iccid(30)])
    package = engine.order(iccid(30), "roll30", "b:1")
    engine.activate(package.id, at=T0 + 100)
    assert package.start_at == package.activation_due_at == T0 + 100
    engine.activate(package.id, at=T0 + 50)  # queued already: the first booking holds
    assert package.activation_due_at == T0 + 100

    clock.now = T0 + 99.9
    restored = CarrierEngine.from_snapshot(
        json.loads(json.dumps(engine.to_snapshot())), [ROLLING], clock=clock
    )
    assert restored.package(package.id).status == "NOT_ACTIVE"
    clock.now = T0 + 110
    again = restored.package(package.id)
    assert (again.status, again.activated_at, again.start_at) == ("ACTIVE", T0 + 100, T0 + 100)


def test_activating_now_overrides_a_later_queued_start(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    engine.add_esims([iccid(31)])
    package = engine.order(iccid(31), "roll30", "b:1")
    engine.activate(package.id, at=T0 + 100)
    engine.activate(package.id)  # "activate now": the switch must not wait for the queue
    due = package.activation_due_at
    assert due is not None and T0 < due < T0 + 100
    engine.activate(package.id)  # idempotent
    assert package.activation_due_at == due
    clock.now = due + 0.001
    assert engine.package(package.id).status == "ACTIVE"


def test_an_auto_package_starts_when_the_active_one_ends(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    engine.add_esims([iccid(32)])
    first = engine.order(iccid(32), "roll30", "b:1")
    engine.activate(first.id)
    clock.now = T0 + 5
    assert engine.package(first.id).status == "ACTIVE"
    second = engine.order(iccid(32), "roll30", "b:2", auto=True)
    assert second.status == "NOT_ACTIVE"  # the SIM is attached on the first one
    clock.now = T0 + 60
    first, second = engine.package(first.id), engine.package(second.id)
    assert first.status == "TERMINATED" and second.status == "ACTIVE"
    assert second.activated_at == first.expires_at
    assert [i.state for i in engine.timeline(iccid(32))] == ["high_speed"]


def test_an_auto_package_on_an_idle_sim_starts_at_once(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    engine.add_esims([iccid(33)])
    package = engine.order(iccid(33), "roll30", "b:1", auto=True)
    assert package.status == "ACTIVE" and package.activated_at == T0


def test_a_start_in_the_past_is_an_ordinary_activation(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    engine.add_esims([iccid(40)])
    package = engine.order(iccid(40), "roll30", None)
    engine.activate(package.id, at=T0 - 5)
    assert package.start_at is None
    assert package.activation_due_at is not None and package.activation_due_at > T0


def test_a_product_with_an_unknown_reset_rule_is_refused() -> None:
    with pytest.raises(ValueError, match="reset rule"):
        Product("x", "x", 1, 30, 128, 1, "midnight")
