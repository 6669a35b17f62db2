"""The rotation core's rules, without Temporal: a table of states and what comes next,
the messages and outcomes, and property-based runs of a whole balance against a carrier
kept in a few lines of Python (no gap, one purchase per seq, one rotation a run).

These run in milliseconds; tests/workflows/test_balance_long_term.py and the e2e tests
run the same rules inside the workflow, on Temporal.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.payloads import (
    ActionRequest,
    AuditNotice,
    BalanceState,
    BalanceStatus,
    Line,
    LineState,
    Policy,
    ProductSpec,
    UsageReport,
    policy_problem,
)
from workflows import caps, events, messages, rotation, timing
from workflows.rotation import Do, Run

T0 = datetime(2030, 1, 1, 12, tzinfo=UTC)
GB = 10**9
HOUR = ProductSpec(
    id="telna-1h",
    carrier="telna",
    carrier_product_id="1h",
    allowance_bytes=GB,
    validity_seconds=3600,
)
DAILY = ProductSpec(
    id="telna-daily",
    carrier="telna",
    carrier_product_id="d",
    allowance_bytes=GB,
    validity_seconds=86_400,
    reset="utc_midnight",
)
BALANCE = "bal_000000000001"


def _line(seq: int, product: ProductSpec = HOUR, **fields: Any) -> Line:
    return Line(
        seq=seq,
        reference=f"{BALANCE}:{seq}",
        product_id=product.id,
        carrier_product_id=product.carrier_product_id,
        allowance_bytes=product.allowance_bytes,
        validity_seconds=product.validity_seconds,
        line_id=f"pkg-{seq}",
        **fields,
    )


def _state(product: ProductSpec = HOUR, active: bool = True, **fields: Any) -> BalanceState:
    """A balance on line 1, activated at T0, with the flags of today's runs."""
    s = BalanceState(
        balance_id=BALANCE,
        iccid="8944000000000000019",
        carrier=product.carrier,
        product=product,
        hand_over_after_bring_up=True,
        hand_over_at_order=True,
        hand_over_when_long=True,
        rotate_within_cap=True,
        queued_by_carrier=True,
        cap_lifts_at_midnight=True,
    )
    if active:
        ends = T0 + timedelta(seconds=product.validity_seconds)
        if product.reset != "rolling":
            ends = datetime(2030, 1, 2, tzinfo=UTC)
        s.active = _line(1, product, state=LineState.active, activated_at=T0, ends_at=ends)
        s.last_seq, s.day, s.lines_today = 1, T0.date(), 1
    return s.model_copy(update=fields)


def _used(fraction: float, at: datetime = T0 + timedelta(minutes=10)) -> dict[str, Any]:
    return {"used_bytes": int(GB * fraction), "usage_observed_at": at}


MINUTE = timedelta(minutes=1)
# 1-hour passes: lead 15 min (a quarter of the validity), margin 60 s.
ORDER_AT = T0 + timedelta(minutes=45)
SWITCH_AT = T0 + timedelta(minutes=59)


def _with_scheduled(**fields: Any) -> BalanceState:
    s = _state(**fields)
    s.scheduled = _line(2, state=LineState.scheduled)
    s.last_seq = 2
    return s


# (name, state, now, run) -> (what, why or moment)
CASES: list[tuple[str, BalanceState, datetime, Run, Do, str | datetime | None]] = [
    ("asleep until the order", _state(), T0, Run(), Do.sleep, ORDER_AT),
    ("the order is due", _state(), ORDER_AT, Run(), Do.order, "order line 2"),
    ("ordered: asleep until the switch", _with_scheduled(), ORDER_AT, Run(), Do.sleep, SWITCH_AT),
    ("the switch is due", _with_scheduled(), SWITCH_AT, Run(), Do.switch, "time"),
    (
        "an operator's rotation orders first",
        _state(rotate_requested=True),
        T0,
        Run(),
        Do.order,
        None,
    ),
    (
        "then switches",
        _with_scheduled(rotate_requested=True),
        T0,
        Run(),
        Do.switch,
        "operator",
    ),
    (
        "one rotation a run",
        _state(),
        ORDER_AT,
        Run(rotated=True),
        Do.hand_over,
        "one rotation a run",
    ),
    ("a line brought up hands over", _state(), T0, Run(brought_up=True), Do.hand_over, None),
    (
        "unless recorded before that rule",
        _state(hand_over_after_bring_up=False),
        T0,
        Run(brought_up=True),
        Do.sleep,
        ORDER_AT,
    ),
    (
        "runs recorded before the order's hand-over hand over at the switch",
        _state(hand_over_at_order=False),
        T0,
        Run(rotated=True),
        Do.hand_over,
        None,
    ),
    ("a long history hands over", _state(), T0, Run(history_long=True), Do.hand_over, None),
    (
        "unless recorded before that rule",
        _state(hand_over_when_long=False),
        T0,
        Run(history_long=True),
        Do.sleep,
        ORDER_AT,
    ),
    (
        "Temporal's suggestion, rather than sleep",
        _state(),
        T0,
        Run(suggested=True),
        Do.hand_over,
        None,
    ),
    (
        "events noted by messages",
        _state(pending_events=[events.event(_state(), "x", T0)]),
        T0,
        Run(),
        Do.record,
        None,
    ),
    (
        "cancel comes before pause",
        _state(paused=True, cancel_requested=True),
        T0,
        Run(),
        Do.cancel,
        None,
    ),
    ("paused", _state(paused=True), T0, Run(), Do.pause, None),
    ("no line: bring one up", _state(active=False), T0, Run(), Do.bring_up, None),
    (
        "the term is done",
        _state(active=False, lines_total=1, last_seq=1),
        T0,
        Run(),
        Do.complete,
        None,
    ),
    (
        "the last line: nothing to order",
        _state(lines_total=1),
        ORDER_AT,
        Run(),
        Do.sleep,
        T0 + 60 * MINUTE,
    ),
    (
        "the last line ends",
        _state(lines_total=1),
        T0 + 60 * MINUTE,
        Run(),
        Do.end_term,
        "term complete",
    ),
    (
        "a usage read falls due",
        _state(usage_check_at=T0 + MINUTE),
        T0 + MINUTE,
        Run(),
        Do.check_usage,
        None,
    ),
    (
        "a usage read sooner than the order",
        _state(usage_check_at=T0 + MINUTE),
        T0,
        Run(),
        Do.sleep,
        T0 + MINUTE,
    ),
    (
        "a daily pass switches at the boundary",
        _with_scheduled(product=DAILY),
        datetime(2030, 1, 2, tzinfo=UTC),
        Run(),
        Do.switch,
        "time",
    ),
]


@pytest.mark.parametrize(
    ("name", "s", "now", "run", "do", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_what_comes_next(
    name: str, s: BalanceState, now: datetime, run: Run, do: Do, expected: Any
) -> None:
    step = rotation.next_step(s, now, run)
    assert step.do == do, step
    if isinstance(expected, datetime):
        assert step.until == expected
    elif expected is not None:
        assert step.why == expected


def test_usage_moves_the_order_and_the_switch_earlier() -> None:
    at = T0 + 10 * MINUTE
    assert rotation.next_step(_state(active=True), at, Run()).do == Do.sleep
    heavy = _state()
    assert heavy.active is not None
    heavy.active = heavy.active.model_copy(update=_used(0.8))
    assert rotation.next_step(heavy, at, Run()).do == Do.order
    heavy.scheduled, heavy.last_seq = _line(2, state=LineState.scheduled), 2
    heavy.active = heavy.active.model_copy(update=_used(0.95))
    assert rotation.next_step(heavy, at, Run()) == rotation.Step(Do.switch, "usage")


QUEUED_HOUR = HOUR.model_copy(update={"id": "telna-1h-auto", "rotation": "queued"})


def test_a_queued_carrier_switches_by_itself_at_the_end_and_the_core_only_confirms() -> None:
    s = _state(QUEUED_HOUR)
    s.scheduled, s.last_seq = _line(2, QUEUED_HOUR, state=LineState.scheduled), 2
    end = T0 + timedelta(hours=1)
    # No activation a margin early: the carrier starts line 2 as line 1 ends.
    assert rotation.next_step(s, SWITCH_AT, Run()).do == Do.sleep
    assert rotation.next_step(s, end, Run()) == rotation.Step(Do.switch, "time")
    assert rotation.switch_plan(s, "time") == rotation.SwitchPlan(True, "at_its_end")
    assert rotation.switch_deadline(s) == end + timedelta(seconds=60)
    # Early by an operator, line 1 ends first: the carrier starts line 2 on attach, as
    # nothing starts a queued pass early (eSIM Go has no such call).
    first = rotation.SwitchPlan(True, "deactivate_first")
    assert rotation.switch_plan(s, "operator") == first


def test_a_queued_carrier_switches_by_usage_itself_once_the_pass_is_used_up() -> None:
    s = _state(QUEUED_HOUR)
    s.scheduled, s.last_seq = _line(2, QUEUED_HOUR, state=LineState.scheduled), 2
    assert s.active is not None
    # At the switch threshold nothing is ours to do: the pass serves its whole allowance.
    s.active = s.active.model_copy(update=_used(0.95))
    assert rotation.next_step(s, ORDER_AT, Run()).do == Do.sleep
    # Seen used up: the carrier ended line 1 and started line 2; the core confirms it.
    rotation.take_usage(s, UsageReport(seq=1, used_bytes=GB, observed_at=ORDER_AT), ORDER_AT)
    s.pending_events = []  # recorded first (its own step)
    assert rotation.next_step(s, ORDER_AT, Run()) == rotation.Step(Do.switch, "usage")
    assert rotation.switch_plan(s, "usage") == rotation.SwitchPlan(True, "used_up")


def test_balances_from_before_the_rule_keep_their_own_switch_at_a_queued_carrier() -> None:
    s = _state(QUEUED_HOUR, queued_by_carrier=False)
    s.scheduled, s.last_seq = _line(2, QUEUED_HOUR, state=LineState.scheduled), 2
    assert s.active is not None
    s.active = s.active.model_copy(update=_used(0.95))
    assert rotation.next_step(s, ORDER_AT, Run()) == rotation.Step(Do.switch, "usage")
    ours = rotation.SwitchPlan(False, "deactivate")
    assert rotation.switch_plan(s, "usage") == rotation.switch_plan(s, "operator") == ours


def test_an_activated_carrier_starts_the_next_line_itself_a_margin_early() -> None:
    s = _with_scheduled()
    assert rotation.next_step(s, SWITCH_AT, Run()) == rotation.Step(Do.switch, "time")
    assert rotation.switch_plan(s, "time") == rotation.SwitchPlan(False, "deactivate")
    # A change to a queued product is the next line's carrier's to start.
    s.next_product = QUEUED_HOUR
    assert rotation.next_step(s, SWITCH_AT, Run()).do == Do.sleep


IN_PLACE_HOUR = HOUR.model_copy(update={"id": "webbing-1h", "rotation": "in_place"})


def test_in_place_nothing_is_bought_ahead_and_the_purchase_is_the_switch() -> None:
    s = _state(IN_PLACE_HOUR)
    # Not at the lead, nor at the pre-order threshold: a change would replace line 1 now.
    assert rotation.next_step(s, ORDER_AT, Run()).do == Do.sleep
    assert s.active is not None
    s.active = s.active.model_copy(update=_used(0.8))
    assert rotation.next_step(s, ORDER_AT, Run()).do == Do.sleep
    assert rotation.next_step(s, SWITCH_AT, Run()) == rotation.Step(Do.order, "order line 2")
    assert rotation.order_deadline(s, SWITCH_AT) == T0 + timedelta(hours=1)
    s.active = s.active.model_copy(update=_used(0.95))
    assert rotation.next_step(s, ORDER_AT, Run()).do == Do.order  # the switch threshold
    s.scheduled, s.last_seq = _line(2, IN_PLACE_HOUR, state=LineState.scheduled), 2
    assert rotation.next_step(s, ORDER_AT, Run()) == rotation.Step(Do.switch, "usage")
    assert rotation.switch_plan(s, "usage") == rotation.SwitchPlan(True, "replaced")


def test_a_line_replaced_in_place_ends_when_its_successor_took_effect() -> None:
    s = _state(IN_PLACE_HOUR)
    assert s.active is not None
    plan = rotation.switch_plan(s, "time")
    new = _line(2, IN_PLACE_HOUR, state=LineState.active, activated_at=SWITCH_AT + MINUTE / 2)
    ended = rotation.ended_by_carrier(plan, s.active, new, "time")
    assert (ended.state, ended.ended_at) == (LineState.expired, SWITCH_AT + MINUTE / 2)
    assert ended.exhausted_at is None
    # Replaced only after its window ran out (the carrier was down at the switch): the
    # device stayed on it, throttled, from the window's end.
    late = new.model_copy(update={"activated_at": T0 + timedelta(hours=1, minutes=2)})
    spent = rotation.ended_by_carrier(plan, s.active, late, "time")
    assert (spent.ended_at, spent.exhausted_at) == (late.activated_at, T0 + timedelta(hours=1))


def test_at_the_cap_usage_does_not_switch_and_the_balance_says_so() -> None:
    s = _with_scheduled(policy=Policy(max_lines_per_day=1))
    assert s.active is not None
    s.active = s.active.model_copy(update=_used(0.96))
    at = T0 + 10 * MINUTE
    step = rotation.next_step(s, at, Run())
    assert step.do == Do.sleep and step.until == SWITCH_AT and step.cap_reached
    caps.throttle(s, at)
    assert s.status == BalanceStatus.Throttled and s.capped
    assert [e.kind for e in s.pending_events] == ["cap_reached"]
    # Said once: the next look sees it noted.
    s.pending_events = []
    assert not rotation.next_step(s, at, Run()).cap_reached
    # The time-based switch is not held by the cap.
    assert rotation.next_step(s, SWITCH_AT, Run()).do == Do.switch


def test_an_operator_rotation_respects_the_cap_unless_forced() -> None:
    s = _state(policy=Policy(max_lines_per_day=1))
    messages.rotate_now(s, ActionRequest(reason="try"), T0)
    assert not s.rotate_requested
    assert [e.kind for e in s.pending_events] == ["rotate_refused"]
    messages.rotate_now(s, ActionRequest(reason="now", force=True), T0)
    assert s.rotate_requested
    # A balance recorded before the cap applied to operators rotates as it did.
    old = _state(policy=Policy(max_lines_per_day=1), rotate_within_cap=False)
    messages.rotate_now(old, ActionRequest(), T0)
    assert old.rotate_requested


def test_the_audit_drops_a_scheduled_line_the_carrier_ended_and_rotates_an_active_one() -> None:
    s = _with_scheduled(policy=Policy(max_lines_per_day=1))
    notice = AuditNotice(kind="ghost_line", reference=f"{BALANCE}:2", reason="gone")
    messages.audit(s, notice, T0)
    assert s.scheduled is None and s.archived[-1].state == LineState.failed
    messages.audit(s, notice.model_copy(update={"reference": f"{BALANCE}:1"}), T0)
    assert s.rotate_requested  # whatever the cap: the eSIM has no service
    assert [e.kind for e in s.pending_events] == ["scheduled_dropped", "rotate_requested"]


QUEUED_HOUR = HOUR.model_copy(update={"id": "telna-1h-auto", "rotation": "queued"})
USED_UP_AT = T0 + 20 * MINUTE


def _used_up_notice(seq: int = 1) -> AuditNotice:
    return AuditNotice(
        kind="ghost_line",
        reference=f"{BALANCE}:{seq}",
        reason="data used up at Telna",
        actor="carrier",
        used_up_at=USED_UP_AT,
    )


def test_a_line_used_up_at_the_carrier_hands_over_to_the_queued_one_it_started() -> None:
    s = _with_scheduled(product=QUEUED_HOUR, policy=Policy(max_lines_per_day=1))
    s.lines_today, s.day = 1, T0.date()
    now = USED_UP_AT + MINUTE  # the termination came late
    messages.audit(s, _used_up_notice(), now)
    assert s.active is not None and s.active.exhausted_at == USED_UP_AT
    assert [e.detail["percent"] for e in s.pending_events] == [50, 80, 95, 100]
    s.pending_events = []  # written (Do.record)
    assert not s.rotate_requested  # a switch by usage, not an operator's rotation
    assert rotation.view(s, now).service == "none"
    # The carrier started the queued line as the old one ended: confirmed at once, even
    # at the cap (nothing is bought or started), and the old line recorded used up.
    step = rotation.next_step(s, now, Run())
    assert step == rotation.Step(Do.switch, "usage")
    plan = rotation.switch_plan(s, "usage")
    assert plan == rotation.SwitchPlan(confirm_only=True, old_ends="used_up")
    new = _line(2, QUEUED_HOUR, state=LineState.active, activated_at=USED_UP_AT)
    ended = rotation.ended_by_carrier(plan, s.active, new, "usage")
    assert (ended.state, ended.ended_at) == (LineState.exhausted, USED_UP_AT)
    changes = rotation.switched(s, new, ended, "usage", now)
    assert [e.kind for e in changes.events] == ["activated", "exhausted"]
    assert rotation.view(s, now).service == "high_speed"


def test_a_used_up_line_with_a_manual_next_one_is_left_by_usage_within_the_cap() -> None:
    s = _with_scheduled()
    messages.audit(s, _used_up_notice(), USED_UP_AT)
    s.pending_events = []
    assert rotation.next_step(s, USED_UP_AT, Run()) == rotation.Step(Do.switch, "usage")
    # We start the next line; the old one has ended at the carrier already.
    assert rotation.switch_plan(s, "usage") == rotation.SwitchPlan(False, "used_up")
    capped = _with_scheduled(policy=Policy(max_lines_per_day=1))
    capped.lines_today, capped.day = 1, T0.date()
    messages.audit(capped, _used_up_notice(), USED_UP_AT)
    capped.pending_events = []
    step = rotation.next_step(capped, USED_UP_AT, Run())
    assert step.do == Do.sleep and step.until == SWITCH_AT and step.cap_reached
    caps.throttle(capped, USED_UP_AT)
    assert capped.pending_events[-1].detail["when_used_up"] == "no service"
    # By time, the switch records the line as used up, not expired.
    assert rotation.switch_plan(capped, "time") == rotation.SwitchPlan(False, "used_up")


def test_at_the_cap_a_queued_line_is_not_bought_ahead_by_usage() -> None:
    """A package waiting on the SIM would start the moment the active one is used up:
    past the cap. The eSIM has no service until the next line is due by time."""
    s = _state(QUEUED_HOUR, policy=Policy(max_lines_per_day=1))
    s.lines_today, s.day = 1, T0.date()
    assert s.active is not None
    s.active = s.active.model_copy(update=_used(0.85))
    assert rotation.next_step(s, T0 + 10 * MINUTE, Run()).do == Do.sleep
    messages.audit(s, _used_up_notice(), USED_UP_AT)
    s.pending_events = []
    assert not s.rotate_requested and rotation.view(s, USED_UP_AT).service == "none"
    step = rotation.next_step(s, USED_UP_AT, Run())
    assert step.do == Do.sleep and step.until == ORDER_AT
    assert rotation.next_step(s, ORDER_AT, Run()).do == Do.order
    # Without the cap it is bought at once; a MANUAL one is bought ahead at the cap too.
    free = _state(QUEUED_HOUR)
    assert free.active is not None
    free.active = free.active.model_copy(update=_used(0.85))
    assert rotation.next_step(free, T0 + 10 * MINUTE, Run()).do == Do.order
    manual = _state(policy=Policy(max_lines_per_day=1))
    manual.lines_today, manual.day = 1, T0.date()
    assert manual.active is not None
    manual.active = manual.active.model_copy(update=_used(0.85))
    assert rotation.next_step(manual, T0 + 10 * MINUTE, Run()).do == Do.order


def test_in_place_a_used_up_line_stays_throttled_and_a_termination_rotates_away() -> None:
    s = _state(IN_PLACE_HOUR, policy=Policy(max_lines_per_day=1))
    assert s.active is not None
    s.active = s.active.model_copy(update={"exhausted_at": USED_UP_AT})
    assert rotation.view(s, USED_UP_AT).service == "throttled"
    caps.throttle(s, USED_UP_AT)
    assert s.pending_events[-1].detail["when_used_up"] == "throttled"
    # Only a carrier whose used-up passes end is told so; anything else ended is gone.
    messages.audit(s, _used_up_notice(), USED_UP_AT)
    assert s.rotate_requested


def test_a_line_the_carrier_must_not_end_is_left_on_the_esim_and_said_so() -> None:
    """Paused, a line the carrier refused to end (the last bundle of an eSIM never
    installed) stays where it was, to be brought up on resume and not bought again; the
    ledger says it was left and why. A refund the carrier reported rides on the event."""
    last = "the last bundle of an eSIM never installed"
    s = _state(active=False, paused=True)
    s.scheduled, s.last_seq = _line(1, state=LineState.scheduled), 1
    left = s.scheduled.model_copy(update={"left_on_esim": last})
    changes = rotation.lines_ended(s, [(left, False)], "paused", T0)
    assert s.scheduled is not None and s.scheduled.seq == 1 and s.scheduled.left_on_esim is None
    assert s.archived == []
    [event] = changes.events
    assert (event.kind, event.seq, event.detail["why"]) == ("left_on_esim", 1, last)
    assert rotation.next_step(s, T0, Run()).do == Do.pause
    rotation.resumed(s)
    s.paused = False
    assert rotation.next_step(s, T0, Run()).do == Do.bring_up  # with line 1, not a new one

    # Cancelled, it is archived as it stands (on the eSIM, never ended); an active line
    # revoked with a refund says what was refunded.
    s = _state(cancel_requested=True)
    s.scheduled, s.last_seq = _line(2, state=LineState.scheduled), 2
    left = s.scheduled.model_copy(update={"left_on_esim": last})
    revoked = s.active.model_copy(update={"state": LineState.cancelled, "refund": "balance"})
    changes = rotation.lines_ended(s, [(left, False), (revoked, True)], "cancelled", T0)
    assert s.active is None and s.scheduled is None
    assert [(line.seq, line.state) for line in s.archived] == [
        (2, LineState.scheduled),
        (1, LineState.cancelled),
    ]
    kinds = [(e.kind, e.detail.get("refunded")) for e in changes.events]
    assert kinds == [("left_on_esim", None), ("cancelled", "refunded to balance")]
    assert rotation.ending(revoked.model_copy(update={"refund": "none"}))["refunded"] == (
        "not refunded"
    )
    assert rotation.ending(_line(3)) == {}


def test_messages_note_a_change_once() -> None:
    s = _state()
    for _ in range(3):
        messages.pause(s, ActionRequest(), T0)
    messages.resume(s, ActionRequest(), T0)
    messages.resume(s, ActionRequest(), T0)
    assert [e.kind for e in s.pending_events] == ["paused", "resumed"]
    assert [e.key for e in s.pending_events] == [f"{BALANCE}:1", f"{BALANCE}:2"]


def test_usage_reports_older_or_smaller_are_not_news() -> None:
    s = _state()
    report = UsageReport(seq=1, used_bytes=GB // 2, observed_at=T0 + MINUTE)
    assert rotation.take_usage(s, report, T0 + MINUTE)
    assert [e.detail["percent"] for e in s.pending_events] == [50]
    assert not rotation.take_usage(s, report, T0 + MINUTE)  # the same again
    smaller = report.model_copy(update={"used_bytes": 1, "observed_at": T0 + 2 * MINUTE})
    assert not rotation.take_usage(s, smaller, T0 + 2 * MINUTE)
    other_line = report.model_copy(update={"seq": 7, "used_bytes": GB})
    assert not rotation.take_usage(s, other_line, T0 + 2 * MINUTE)
    # A late 100 % report still marks when the allowance ran out.
    late = UsageReport(seq=1, used_bytes=GB, observed_at=T0 + MINUTE // 2)
    assert not rotation.take_usage(s, late, T0 + 2 * MINUTE)
    assert s.active is not None and s.active.exhausted_at == T0 + MINUTE // 2


def test_failing_is_said_once_per_episode_and_recovery_says_so() -> None:
    s = _state()
    assert rotation.failing(s, "carrier down", T0) is not None
    assert rotation.failing(s, "still down", T0) is None
    assert s.status == BalanceStatus.Failing
    changes = rotation.ordered(s, 2, _line(2, state=LineState.scheduled), T0)
    assert s.status == BalanceStatus.Active and s.failing_reason is None
    assert [e.kind for e in [*s.pending_events, *changes.events]] == ["recovered", "ordered"]


def test_an_adopted_package_already_ended_is_passed_over() -> None:
    s = _state()
    changes = rotation.ordered(s, 2, _line(2, state=LineState.cancelled), T0)
    assert s.scheduled is None and s.last_seq == 2
    assert [e.kind for e in changes.events] == ["order_failed"]
    assert rotation.next_step(s, ORDER_AT, Run()).why == "order line 3"


# --- whole balances, against a carrier in a few lines ---------------------------------


@dataclasses.dataclass
class Carrier:
    """Sells, starts and ends lines at once; usage grows at ``rate`` bytes a second. As
    the carriers do, a pass that stacks (queued, activated) ends when its data is used up
    (Telna: TERMINATED); one in place serves on at the throttled speed."""

    product: ProductSpec
    rate: float
    orders: list[int] = dataclasses.field(default_factory=list)
    # (seq, active from, active until) as the carrier served them
    served: list[tuple[int, datetime, datetime]] = dataclasses.field(default_factory=list)

    def order(self, seq: int, now: datetime) -> Line:
        self.orders.append(seq)
        return _line(seq, self.product, state=LineState.scheduled, ordered_at=now)

    def start(self, line: Line, at: datetime) -> Line:
        if self.product.reset == "rolling":
            ends = at + timedelta(seconds=line.validity_seconds)
        else:
            ends = datetime.combine(at.date() + timedelta(days=1), datetime.min.time(), UTC)
        return line.model_copy(
            update={"state": LineState.active, "activated_at": at, "ends_at": ends}
        )

    def end(self, line: Line, state: LineState, at: datetime) -> Line:
        assert line.activated_at is not None
        self.served.append((line.seq, line.activated_at, self.serves_until(line, at)))
        return line.model_copy(update={"state": state, "ended_at": at})

    def used_up_at(self, line: Line) -> datetime | None:
        """When the carrier ends ``line`` as its data runs out, if it does."""
        if not self.rate or self.product.rotation == "in_place" or line.activated_at is None:
            return None
        return line.activated_at + timedelta(seconds=line.allowance_bytes / self.rate)

    def serves_until(self, line: Line, at: datetime) -> datetime:
        return min(at, timing.ends_at(line), self.used_up_at(line) or at)

    def used(self, line: Line, at: datetime) -> int:
        assert line.activated_at is not None
        seconds = (at - line.activated_at).total_seconds()
        return min(line.allowance_bytes, int(self.rate * max(0.0, seconds)))


@dataclasses.dataclass
class Trace:
    steps: list[rotation.Step] = dataclasses.field(default_factory=list)
    runs: list[list[Do]] = dataclasses.field(default_factory=lambda: [[]])
    usage_switches: list[tuple[datetime, int, int | None]] = dataclasses.field(default_factory=list)
    # Switches that only confirmed a line the carrier started as the old one was used up.
    confirmed_carrier_starts: int = 0


def run_balance(
    s: BalanceState, carrier: Carrier, until: datetime, rotations: list[datetime]
) -> Trace:
    """Do what the core says, as the workflow's shell would, with every carrier call
    answered at once, until ``until`` or the balance closes. An operator asks for a
    rotation at each of ``rotations``."""
    now, run, trace = T0, Run(), Trace()
    pending = sorted(rotations)
    for _ in range(10_000):
        step = rotation.next_step(s, now, run)
        trace.steps.append(step)
        trace.runs[-1].append(step.do)
        if step.cap_reached:
            caps.throttle(s, now)
        match step.do:
            case Do.hand_over:
                run = Run()
                trace.runs.append([])
            case Do.record:
                s.pending_events = []
            case Do.complete | Do.cancel:
                return trace
            case Do.bring_up:
                rotation.ordered(s, s.last_seq + 1, carrier.order(s.last_seq + 1, now), now)
                assert s.scheduled is not None
                active = carrier.start(s.scheduled, now)
                rotation.confirmed(s, active, now)
                rotation.brought_up(s, active, now)
                run.brought_up = True
            case Do.order:
                seq = s.last_seq + 1
                rotation.ordered(s, seq, carrier.order(seq, now), now)
            case Do.switch:
                assert s.active is not None and s.scheduled is not None
                old, plan = s.active, rotation.switch_plan(s, step.why)
                used_up = carrier.used_up_at(old)
                start = now
                if plan.old_ends == "at_its_end":
                    start = timing.ends_at(old)
                elif plan.old_ends == "used_up" and plan.confirm_only:
                    # Started on attach as the old one ended (or when bought, if later).
                    assert used_up is not None and s.scheduled.ordered_at is not None
                    start = max(used_up, s.scheduled.ordered_at)
                    trace.confirmed_carrier_starts += 1
                active = carrier.start(s.scheduled, start)
                rotation.confirmed(s, active, now)
                if plan.old_ends == "used_up":
                    assert used_up is not None
                    carrier.end(old, LineState.exhausted, used_up)
                    ended = rotation.ended_by_carrier(plan, old, active, step.why)
                    assert ended.state == LineState.exhausted and ended.ended_at == used_up
                else:
                    end_state = rotation.end_state(step.why)
                    ended = carrier.end(old, end_state, active.activated_at or now)
                rotation.switched(s, active, ended, step.why, now)
                if step.why == "usage" and not (plan.old_ends == "used_up" and plan.confirm_only):
                    trace.usage_switches.append((now, s.lines_today, s.policy.max_lines_per_day))
                run.rotated = True
            case Do.end_term:
                assert s.active is not None
                ended = carrier.end(s.active, LineState.expired, now)
                rotation.lines_ended(s, [(ended, True)], "term complete", now)
            case Do.check_usage:
                assert s.active is not None
                s.usage_check_at = None
                used = carrier.used(s.active, now)
                rotation.take_usage(
                    s, UsageReport(seq=s.active.seq, used_bytes=used, observed_at=now), now
                )
            case Do.sleep:
                assert step.until is not None and step.until > now, f"asleep until the past: {step}"
                wake = min([step.until, until, *pending[:1], *_webhook(s, carrier, now)])
                now = wake
                if pending and pending[0] <= now:
                    pending.pop(0)
                    messages.rotate_now(s, ActionRequest(), now)
                if s.active is not None and carrier.rate:
                    used = carrier.used(s.active, now)
                    rotation.take_usage(
                        s, UsageReport(seq=s.active.seq, used_bytes=used, observed_at=now), now
                    )
                if now >= until:
                    return trace
            case _:
                raise AssertionError(step)
    raise AssertionError("the balance never slept to the end")


def _webhook(s: BalanceState, carrier: Carrier, now: datetime) -> list[datetime]:
    """When the carrier next reports usage (at 50, 80 and 100 % of the allowance)."""
    line = s.active
    if line is None or not carrier.rate or line.activated_at is None:
        return []
    moments = []
    for percent in (50, 80, 100):
        at = line.activated_at + timedelta(
            seconds=line.allowance_bytes * percent / 100 / carrier.rate
        )
        if at > now:
            moments.append(at)
    return moments[:1]


def _gaps(carrier: Carrier, s: BalanceState, until: datetime) -> list[tuple[datetime, datetime]]:
    served = sorted(carrier.served)
    if s.active is not None and s.active.activated_at is not None:
        served.append((s.active.seq, s.active.activated_at, carrier.serves_until(s.active, until)))
    gaps, covered = [], T0
    for _, start, end in sorted(served, key=lambda x: x[1]):
        if start > covered:
            gaps.append((covered, start))
        covered = max(covered, end)
    return gaps


policies = st.builds(
    Policy,
    preorder_fraction=st.sampled_from([0.5, 0.8]),
    switch_fraction=st.sampled_from([0.9, 0.95]),
    max_lines_per_day=st.one_of(st.none(), st.integers(1, 4)),
)
products = st.sampled_from(
    [
        HOUR,
        DAILY,
        HOUR.model_copy(update={"id": "telna-10m", "validity_seconds": 600}),
        HOUR.model_copy(update={"id": "telna-1h-auto", "rotation": "queued"}),
        HOUR.model_copy(update={"id": "webbing-1h", "rotation": "in_place"}),
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    product=products,
    policy=policies,
    rate=st.sampled_from([0.0, 10_000.0, GB / 3000, GB / 600]),
    rotations=st.lists(st.integers(1, 30 * 3600), max_size=4),
    lines_total=st.one_of(st.none(), st.integers(1, 12)),
)
def test_a_balance_never_has_a_gap_buys_once_per_seq_and_rotates_once_a_run(
    product: ProductSpec, policy: Policy, rate: float, rotations: list[int], lines_total: int | None
) -> None:
    if policy_problem(policy, product.validity_seconds):
        return
    s = _state(product, active=False, policy=policy, lines_total=lines_total)
    carrier = Carrier(product, rate)
    until = T0 + timedelta(hours=30)  # across a UTC midnight
    trace = run_balance(s, carrier, until, [T0 + timedelta(seconds=r) for r in rotations])

    # One purchase per seq, in order, never more than the term.
    assert carrier.orders == list(range(1, len(carrier.orders) + 1))
    if lines_total is not None:
        assert len(carrier.orders) <= lines_total
    # No gap: from the first line to the end, some line is always active (or the term
    # is complete) — except where a pass that ends when used up runs out while the day's
    # cost cap holds, or as the last line of a term: then the eSIM has no service.
    end = until if s.status != BalanceStatus.Completed else max(e for _, _, e in carrier.served)
    used_up = {carrier.used_up_at(_line(seq, activated_at=a)) for seq, a, _ in carrier.served}
    for start, _ in _gaps(carrier, s, end):
        assert start in used_up, (start, carrier.served)
        assert policy.max_lines_per_day is not None or lines_total is not None
    if product.rotation == "in_place" or not rate:
        assert _gaps(carrier, s, end) == []
    # One rotation a run, and a run that rotated orders nothing more.
    for steps in trace.runs:
        assert steps.count(Do.switch) <= 1, steps
        if Do.switch in steps:
            assert Do.order not in steps[steps.index(Do.switch) :], steps
    # Usage never switches past the day's cap.
    for _, today, cap in trace.usage_switches:
        assert cap is None or today <= cap


@settings(max_examples=100, deadline=None)
@given(product=products, policy=policies, seconds=st.integers(0, 2 * 86_400), used=st.floats(0, 1))
def test_a_sleep_is_always_until_a_later_moment(
    product: ProductSpec, policy: Policy, seconds: int, used: float
) -> None:
    """A sleep until a moment already past would wake the loop at once, for ever."""
    if policy_problem(policy, product.validity_seconds):
        return
    for s in (_state(product, policy=policy), _with_scheduled(product=product, policy=policy)):
        assert s.active is not None
        s.active = s.active.model_copy(update=_used(used, T0 + timedelta(seconds=1)))
        now = T0 + timedelta(seconds=seconds)
        step = rotation.next_step(s, now, Run())
        if step.do == Do.sleep:
            assert step.until is not None and step.until > now
