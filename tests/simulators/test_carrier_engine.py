"""The carrier engine on an injected clock: exact event times, timeline, alerts, snapshot."""

from __future__ import annotations

import json

import pytest

from models.identifiers import make_iccid
from simulators.core import CarrierEngine
from simulators.errors import UnknownSim, WrongState
from simulators.records import Alert, Product

T0 = 1_800_000_000.0
ICCID = make_iccid("894400000000000001")
# 1000 bytes for 100 s: compressed, so activation takes 1-5 s.
SHORT = Product("short", "Short", 1000, 100, 128, 1)
DAILY = Product("daily", "Daily", 10**9, 86_400, 128, 150)


class FakeClock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

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
    engine = CarrierEngine([SHORT, DAILY], clock=clock, seed=7, sink=alerts.append)
    engine.add_esims([ICCID])
    return engine


def active_package(engine: CarrierEngine, clock: FakeClock, product: str = "short") -> str:
    package = engine.order(ICCID, product, "b1:1")
    engine.activate(package.id)
    assert package.activation_due_at is not None
    clock.now = package.activation_due_at
    engine.advance()
    assert package.status == "ACTIVE"
    return package.id


def ledger(engine: CarrierEngine) -> list[tuple[str, float]]:
    return [(e.action, e.at) for e in engine.ledger()]


def test_activation_waits_for_the_latency_then_stamps_the_due_time(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    package = engine.order(ICCID, "short", "b1:1")
    engine.activate(package.id)
    due = package.activation_due_at
    assert due is not None and T0 + 1 <= due <= T0 + 5
    clock.now = due - 0.001
    assert engine.package(package.id).status == "NOT_ACTIVE"
    clock.now = due + 3  # advance runs late; the stamp stays exact
    assert engine.package(package.id).status == "ACTIVE"
    assert package.activated_at == due
    assert package.expires_at == due + 100
    assert ledger(engine) == [("order", T0), ("activate", due)]


def test_real_products_use_the_configured_latency(engine: CarrierEngine, clock: FakeClock) -> None:
    package = engine.order(ICCID, "daily", None)
    engine.activate(package.id)
    assert package.activation_due_at is not None
    assert 2 <= package.activation_due_at - T0 <= 90
    engine.set_activation_latency(0, 0)
    instant = engine.order(ICCID, "daily", None)
    assert engine.activate(instant.id).status == "ACTIVE"


def test_exhaust_and_expiry_happen_at_the_exact_computed_times(
    engine: CarrierEngine, clock: FakeClock, alerts: list[Alert]
) -> None:
    package_id = active_package(engine, clock)
    start = clock.now
    engine.set_traffic(20)  # 1000 bytes at 20 B/s: 50 % at +25 s, 80 % at +40, 100 % at +50
    clock.now = start + 500
    engine.advance()

    assert ledger(engine)[-2:] == [("exhaust", start + 50), ("expire", start + 100)]
    usage = [(a.threshold_percent, a.at, a.used_bytes) for a in alerts if a.kind != "status"]
    assert usage == [(50, start + 25, 500), (80, start + 40, 800), (100, start + 50, 1000)]
    ended = [a for a in alerts if a.kind == "status"]
    assert [(a.package_id, a.at, a.status, a.reason) for a in ended] == [
        (package_id, start + 100, "TERMINATED", "expire")
    ]
    intervals = [(i.state, i.start, i.end) for i in engine.timeline(ICCID)]
    assert intervals == [
        ("high_speed", start, start + 50),
        ("throttled", start + 50, start + 100),
        ("none", start + 100, None),
    ]


def test_many_small_advances_give_the_same_times_as_one_big_one(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    active_package(engine, clock)
    engine.set_traffic(13.7)
    end = clock.now + 120
    while clock.now < end:
        clock.now += 0.1
        engine.advance()
    stepped = ledger(engine)

    other = CarrierEngine([SHORT, DAILY], clock=FakeClock(), seed=7)
    other.add_esims([ICCID])
    other_clock = other.clock
    assert isinstance(other_clock, FakeClock)
    active_package(other, other_clock)
    other.set_traffic(13.7)
    other_clock.now = end
    other.advance()

    assert [a for a, _ in stepped] == [a for a, _ in ledger(other)]
    assert [t for _, t in stepped] == pytest.approx([t for _, t in ledger(other)], abs=1e-6)


def test_a_traffic_change_moves_the_exhaust_time(engine: CarrierEngine, clock: FakeClock) -> None:
    active_package(engine, clock)
    start = clock.now
    engine.set_traffic(10, ICCID)
    clock.now = start + 30  # 300 bytes used
    engine.set_traffic(40, ICCID)
    clock.now = start + 60
    engine.advance()
    assert ("exhaust", pytest.approx(start + 30 + 700 / 40)) in ledger(engine)


def test_overlapping_packages_leave_no_gap_and_the_newest_takes_the_traffic(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    first = active_package(engine, clock)
    engine.set_traffic(10)
    first_start = clock.now
    clock.now += 20
    second = active_package(engine, clock)
    clock.now += 10
    engine.terminate(first)

    handed_over = engine.package(second).activated_at
    assert handed_over is not None
    used_before = engine.package(first).used_bytes
    assert used_before == pytest.approx(10 * (handed_over - first_start))
    clock.now += 10
    assert engine.package(first).used_bytes == used_before
    assert engine.package(second).used_bytes == pytest.approx(200)
    assert [(i.state, i.start, i.end) for i in engine.timeline(ICCID)] == [
        ("high_speed", first_start, None)
    ]


def test_a_gap_between_packages_shows_as_none(engine: CarrierEngine, clock: FakeClock) -> None:
    first = active_package(engine, clock)
    start = clock.now
    clock.now += 10
    engine.terminate(first)
    gap_start = clock.now
    clock.now += 5
    second = active_package(engine, clock)
    states = [(i.state, i.start, i.end) for i in engine.timeline(ICCID)]
    resumed = engine.package(second).activated_at
    assert states == [
        ("high_speed", start, gap_start),
        ("none", gap_start, resumed),
        ("high_speed", resumed, None),
    ]
    actions = [a for a, _ in ledger(engine)]
    assert actions == ["order", "activate", "deactivate", "order", "activate"]


def test_terminate_cancels_a_pending_package_and_refuses_reactivation(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    package = engine.order(ICCID, "short", "b1:2")
    engine.activate(package.id)
    engine.terminate(package.id)
    clock.now += 60
    assert engine.package(package.id).status == "TERMINATED"
    assert [a for a, _ in ledger(engine)] == ["order", "cancel"]
    with pytest.raises(WrongState):
        engine.activate(package.id)
    with pytest.raises(UnknownSim):
        engine.order(make_iccid("894400000000000002"), "short", None)


def test_snapshot_round_trip_applies_the_time_spent_stopped(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    active_package(engine, clock)
    start = clock.now
    engine.set_traffic(5)
    clock.now += 10
    engine.advance()
    saved = json.loads(json.dumps(engine.to_snapshot()))

    later = FakeClock(start + 1000)
    restored = CarrierEngine.from_snapshot(saved, [SHORT, DAILY], clock=later)
    assert json.loads(json.dumps(restored.to_snapshot())) == saved
    restored.advance()
    assert [(a, t) for a, t in ledger(restored)][-1] == ("expire", start + 100)
    assert ("exhaust", start + 1000 / 5) not in ledger(restored)
    assert restored.packages(ICCID)[0].used_bytes == pytest.approx(500)


def test_an_order_is_billed_at_its_products_price_and_a_snapshot_keeps_it(
    engine: CarrierEngine, clock: FakeClock
) -> None:
    engine.currency = "EUR"
    engine.order(ICCID, "daily", None)
    [entry] = engine.ledger(ICCID)
    assert (entry.action, entry.price_cents, entry.currency) == ("order", 150, "EUR")
    saved = json.loads(json.dumps(engine.to_snapshot()))
    restored = CarrierEngine.from_snapshot(saved, [SHORT, DAILY], clock=clock)
    assert restored.ledger(ICCID) == [entry]
    # A snapshot from before prices were billed still loads: its orders bill nothing known.
    for row in saved["ledger"]:
        del row[6:]
    for sim in saved["sims"]:
        for package in sim["packages"]:
            del package["price_cents"], package["currency"]
    older = CarrierEngine.from_snapshot(saved, [SHORT, DAILY], clock=clock)
    assert [(e.action, e.price_cents) for e in older.ledger(ICCID)] == [("order", None)]


def test_iccids_replayed_separately_still_give_one_ledger_in_time_order(
    engine: CarrierEngine, clock: FakeClock, alerts: list[Alert]
) -> None:
    other = make_iccid("894400000000000003")
    engine.add_esims([other])
    fast = engine.order(ICCID, "short", None)
    slow = engine.order(other, "short", None)
    engine.activate(fast.id)
    engine.activate(slow.id)
    engine.set_traffic(10, ICCID)
    engine.set_traffic(1, other)
    clock.now += 300
    engine.package(slow.id)  # replays only the other ICCID first
    times = [e.at for e in engine.ledger()]
    assert times == sorted(times)
    assert [e.action for e in engine.ledger(ICCID)] == [
        "order",
        "activate",
        "exhaust",
        "expire",
    ]
    assert {a.package_id for a in alerts if a.kind == "status"} == {fast.id, slow.id}


@pytest.fixture
def ending(clock: FakeClock, alerts: list[Alert]) -> CarrierEngine:
    """A carrier that ends a used-up package (Telna: CARRIERS.md 2.6)."""
    engine = CarrierEngine(
        [SHORT, DAILY], clock=clock, seed=7, sink=alerts.append, used_up_ends=True
    )
    engine.add_esims([ICCID])
    return engine


def test_a_used_up_package_ends_then_where_the_carrier_ends_it(
    ending: CarrierEngine, clock: FakeClock, alerts: list[Alert]
) -> None:
    package_id = active_package(ending, clock)
    start = clock.now
    ending.set_traffic(20)  # 100 % at +50 s
    waiting = ending.order(ICCID, "short", "b1:2")  # from a MANUAL template: not started
    clock.now = start + 500
    ending.advance()

    package = ending.package(package_id)
    assert (package.status, package.terminated_at) == ("TERMINATED", start + 50)
    assert ledger(ending)[-2:] == [("exhaust", start + 50), ("expire", start + 50)]
    ended = [(a.package_id, a.at, a.status, a.reason) for a in alerts if a.kind == "status"]
    assert ended == [(package_id, start + 50, "TERMINATED", "expire")]
    assert ending.package(waiting.id).status == "NOT_ACTIVE"
    assert [(i.state, i.start, i.end) for i in ending.timeline(ICCID)] == [
        ("high_speed", start, start + 50),
        ("none", start + 50, None),
    ]


def test_a_used_up_package_hands_over_to_the_waiting_auto_one_with_no_gap(
    ending: CarrierEngine, clock: FakeClock
) -> None:
    first = ending.order(ICCID, "short", "b1:1", auto=True)
    start = clock.now
    assert first.status == "ACTIVE"
    second = ending.order(ICCID, "short", "b1:2", auto=True)
    ending.set_traffic(20)  # the first is used up at +50 s, the second at +100 s
    clock.now = start + 75
    ending.advance()

    assert ending.package(first.id).terminated_at == start + 50
    assert (second.status, second.activated_at) == ("ACTIVE", start + 50)
    assert second.used_bytes == pytest.approx(500)
    assert [(a, t) for a, t in ledger(ending)][-3:] == [
        ("exhaust", start + 50),
        ("expire", start + 50),
        ("activate", start + 50),
    ]
    assert [(i.state, i.start, i.end) for i in ending.timeline(ICCID)] == [
        ("high_speed", start, None)
    ]
    clock.now = start + 200
    assert [i.state for i in ending.timeline(ICCID)] == ["high_speed", "none"]


def test_the_choice_to_end_used_up_packages_survives_a_snapshot(
    ending: CarrierEngine, clock: FakeClock
) -> None:
    active_package(ending, clock)
    start = clock.now
    ending.set_traffic(5)  # 100 % at +200 s, after the window's end at +100 s
    ending.order(ICCID, "short", None, auto=True)
    saved = json.loads(json.dumps(ending.to_snapshot()))
    restored = CarrierEngine.from_snapshot(
        saved, [SHORT, DAILY], clock=FakeClock(start + 80), used_up_ends=True
    )
    restored.set_traffic(50)  # at +80 s, 400 bytes used: the rest goes in 12 s
    restored.advance(start + 105)  # the waiting one, started at +92 s, lasts until +112
    actions = [(a, t) for a, t in ledger(restored)]
    assert ("expire", pytest.approx(start + 92)) in actions
    assert ("activate", pytest.approx(start + 92)) in actions
    assert [i.state for i in restored.timeline(ICCID)] == ["high_speed"]
