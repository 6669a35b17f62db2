"""The day's cost cap in money (``max_spend_per_day``) and the cap lifting at 00:00 UTC,
as rules of the rotation core: no Temporal, milliseconds. The workflow runs them on the
virtual clock in tests/workflows/test_cap_lifts.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from models.payloads import BalanceState, BalanceStatus, LineState, Policy
from tests.workflows.test_rotation import (
    HOUR,
    MINUTE,
    ORDER_AT,
    T0,
    _line,
    _state,
    _used,
)
from workflows import caps, rotation, timing
from workflows.rotation import Do, Run

PRICED = HOUR.model_copy(update={"price_cents": 150, "currency": "USD"})
# A pass of a day, rolling: activated at T0 (12:00 UTC), it serves past midnight.
DAY = PRICED.model_copy(update={"id": "telna-day", "validity_seconds": 86_400})
MIDNIGHT = datetime(2030, 1, 2, tzinfo=UTC)
# Its lead is 30 min and its margin 60 s.
DAY_ORDER_AT = datetime(2030, 1, 2, 11, 30, tzinfo=UTC)
DAY_SWITCH_AT = datetime(2030, 1, 2, 11, 59, tzinfo=UTC)


def _bought(s: BalanceState, seq: int, at: datetime, cents: int = 150) -> None:
    """Line ``seq`` ordered at ``at`` for ``cents``: the outcome the workflow records."""
    line = _line(seq, state=LineState.scheduled, ordered_at=at, price_cents=cents, currency="USD")
    rotation.ordered(s, seq, line, at)


def _spent(s: BalanceState, cents: int, at: datetime = T0) -> BalanceState:
    s.spend_day, s.spend_today_cents = at.date(), {"USD": cents}
    return s


def test_each_line_bought_counts_in_the_balance_spend_and_the_days() -> None:
    s = _state(PRICED)
    _bought(s, 2, ORDER_AT)
    assert s.spend_cents == {"USD": 150} and s.spend_today_cents == {"USD": 150}
    view = rotation.view(s, ORDER_AT)
    assert (view.spend, view.spend_today) == ({"USD": "1.50"}, {"USD": "1.50"})
    # The next day starts at nothing; the balance's spend keeps everything.
    s.scheduled = None
    _bought(s, 3, MIDNIGHT + MINUTE, cents=175)
    assert s.spend_cents == {"USD": 325} and s.spend_today_cents == {"USD": 175}
    assert rotation.view(s, MIDNIGHT + 2 * MINUTE + timedelta(days=1)).spend_today == {}
    # A line without a price (ordered by a worker from before prices) counts nowhere.
    s.scheduled = None
    rotation.ordered(s, 4, _line(4, state=LineState.scheduled), MIDNIGHT + MINUTE)
    assert s.spend_cents == {"USD": 325}


def test_nothing_is_bought_for_usage_past_the_days_spend_cap() -> None:
    at = T0 + 10 * MINUTE
    cap = Policy(max_spend_per_day=Decimal("3.00"))
    # 2.00 spent and 1.50 to buy: 3.50 is past 3.00, so usage buys nothing ahead.
    s = _spent(_state(PRICED, policy=cap), 200)
    assert s.active is not None
    s.active = s.active.model_copy(update=_used(0.85))
    assert timing.spend_cap_reached(s, at)
    assert rotation.next_step(s, at, Run()) == rotation.Step(
        Do.sleep, "order line 2", until=ORDER_AT
    )
    # 1.50 spent: 3.00 is within the cap.
    within = _spent(_state(PRICED, policy=cap), 150)
    assert within.active is not None
    within.active = within.active.model_copy(update=_used(0.85))
    assert rotation.next_step(within, at, Run()).do == Do.order
    # By time the next line is bought whatever the cap: it keeps the eSIM served.
    assert rotation.next_step(s, ORDER_AT, Run()).do == Do.order


def test_at_the_spend_cap_the_balance_stays_on_its_line_and_says_which_cap() -> None:
    at = T0 + 10 * MINUTE
    s = _spent(_state(PRICED, policy=Policy(max_spend_per_day=Decimal("2.50"))), 150)
    assert s.active is not None
    s.active = s.active.model_copy(update=_used(0.96))
    step = rotation.next_step(s, at, Run())
    assert step.do == Do.sleep and step.cap_reached
    caps.throttle(s, at)
    assert s.status == BalanceStatus.Throttled
    detail = s.pending_events[-1].detail
    assert detail["cap"] == "spend"
    assert (detail["max_spend_per_day"], detail["spent_today"], detail["currency"]) == (
        "2.50",
        "1.50",
        "USD",
    )
    assert detail["lifts_at"] == MIDNIGHT.isoformat()
    # A next line already bought costs nothing more to switch to: not held back.
    bought = _spent(_state(PRICED, policy=Policy(max_spend_per_day=Decimal("2.50"))), 300)
    bought.scheduled, bought.last_seq = _line(2, state=LineState.scheduled), 2
    assert bought.active is not None
    bought.active = bought.active.model_copy(update=_used(0.96))
    assert rotation.next_step(bought, at, Run()) == rotation.Step(Do.switch, "usage")


def _capped(policy: Policy) -> BalanceState:
    """A day pass used up at 14:00 UTC with the day's cap spent: throttled."""
    s = _spent(_state(DAY, policy=policy), 150)
    assert s.active is not None
    s.active = s.active.model_copy(update=_used(0.96, T0 + timedelta(hours=2)))
    at = T0 + timedelta(hours=2)
    assert rotation.next_step(s, at, Run()).cap_reached
    caps.throttle(s, at)
    s.pending_events = []
    return s


def test_the_cap_lifts_at_midnight_and_the_balance_switches_by_usage() -> None:
    for policy in (
        Policy(max_lines_per_day=1),
        Policy(max_spend_per_day=Decimal("2.00")),
    ):
        s = _capped(policy)
        evening = T0 + timedelta(hours=3)
        if policy.max_lines_per_day:
            # A cap in lines buys ahead (it counts lines started), and starts nothing.
            assert rotation.next_step(s, evening, Run()).do == Do.order
            _bought(s, 2, evening)
        # Asleep until midnight: the line would end only at noon tomorrow.
        step = rotation.next_step(s, evening, Run())
        assert step == rotation.Step(Do.sleep, "the day's cost cap lifts", until=MIDNIGHT)
        assert not caps.cap_lifts(s, MIDNIGHT - MINUTE)
        assert caps.cap_lifts(s, MIDNIGHT)
        caps.lift_cap(s, MIDNIGHT)
        assert (s.capped, s.status) == (False, BalanceStatus.Active)
        assert [e.kind for e in s.pending_events] == ["cap_lifted"]
        s.pending_events = []
        # The line is spent: bought (where it was not) and switched at once.
        if s.scheduled is None:
            assert rotation.next_step(s, MIDNIGHT, Run()).do == Do.order, policy
            _bought(s, 2, MIDNIGHT)
        assert rotation.next_step(s, MIDNIGHT, Run()) == rotation.Step(Do.switch, "usage")


def test_a_pass_dearer_than_the_cap_never_lifts_it_and_is_said_once() -> None:
    s = _capped(Policy(max_spend_per_day=Decimal("1.00")))
    assert not caps.cap_lifts(s, MIDNIGHT)
    step = rotation.next_step(s, MIDNIGHT, Run())
    assert step.do == Do.sleep and not step.cap_reached
    assert step.until == DAY_ORDER_AT  # the next line comes by time


def test_a_balance_from_before_the_midnight_wake_waits_for_its_line_as_it_did() -> None:
    s = _capped(Policy(max_lines_per_day=1)).model_copy(update={"cap_lifts_at_midnight": False})
    evening = T0 + timedelta(hours=3)
    _bought(s, 2, evening)
    assert rotation.next_step(s, evening, Run()).until == DAY_SWITCH_AT
    assert not caps.cap_lifts(s, MIDNIGHT)
