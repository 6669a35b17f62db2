"""The rotation's pure rules never divide by a zero allowance or validity.

The carrier clients refuse a package without an allowance and the catalogue a product
without one; should such a line reach a workflow all the same, its rules must still
answer (an exception there fails the workflow task, again at every retry), and usage
must not rotate it (each new line would be bought and rotated away at once).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.payloads import BalanceState, Line, LineState, Policy, ProductSpec, policy_problem
from workflows import rotation, steps, timing, usage

T0 = datetime(2030, 1, 1, 12, tzinfo=UTC)
ALLOWANCES = (0, -1, 10**9)
VALIDITIES = (0, -1, 60, 86_400)
POLICIES = (Policy(), Policy(lead_seconds=20, margin_seconds=5, max_lines_per_day=1))
RESETS = ("rolling", "utc_midnight")
# (used bytes, the one before), observed 10 s apart: none, one, two rising observations.
USAGE = ((0, None), (500, None), (800, 300))


def _line(allowance: int, validity: int, used: int, before: int | None) -> Line:
    observed = T0 + timedelta(seconds=10) if used else None
    return Line(
        seq=1,
        reference="bal_000000000000:1",
        product_id="telna-x",
        carrier_product_id="x",
        allowance_bytes=allowance,
        validity_seconds=validity,
        state=LineState.active,
        line_id="pkg-1",
        activated_at=T0,
        used_bytes=used,
        usage_observed_at=observed,
        prev_used_bytes=before or 0,
        prev_observed_at=T0 if before is not None else None,
    )


def _state(line: Line, policy: Policy, reset: str) -> BalanceState:
    s = BalanceState(
        balance_id="bal_000000000000",
        iccid="8944000000000000019",
        carrier="telna",
        product=ProductSpec(
            id="telna-x",
            carrier="telna",
            carrier_product_id="x",
            allowance_bytes=1,
            validity_seconds=1,
        ),
        policy=policy,
        active=line,
        day=T0.date(),
        lines_today=1,
    )
    # As if the line's figures had reached the state past every refusal: unvalidated.
    s.product = ProductSpec.model_construct(
        id=line.product_id,
        carrier="telna",
        carrier_product_id=line.carrier_product_id,
        allowance_bytes=line.allowance_bytes,
        validity_seconds=line.validity_seconds,
        reset=reset,
        price_cents=0,
    )
    return s


RULES: dict[str, Callable[[BalanceState, datetime], Any]] = {
    "usage.fraction": lambda s, now: usage.fraction(s.active),
    "usage.rate": lambda s, now: usage.rate(s.active),
    "usage.projected_exhaustion": lambda s, now: usage.projected_exhaustion(s.active),
    "usage.order_due": lambda s, now: usage.order_due(s.active, s.policy, now),
    "usage.switch_due": lambda s, now: usage.switch_due(s.active, s.policy, now),
    "usage.next_check": lambda s, now: usage.next_check(
        s.active, s.policy, now, timing.switch_at(s)
    ),
    "usage.crossed": lambda s, now: usage.crossed(0, s.active.used_bytes, s.active.allowance_bytes),
    "timing.ends_at": lambda s, now: timing.ends_at(s.active),
    "timing.order_at": lambda s, now: timing.order_at(s),
    "timing.safety_net_start": lambda s, now: timing.safety_net_start(s),
    "timing.switch_at": lambda s, now: timing.switch_at(s),
    "timing.order_due": lambda s, now: timing.order_due(s, now),
    "timing.switch_reason": lambda s, now: timing.switch_reason(s, now),
    "timing.cap_reached": lambda s, now: timing.cap_reached(s, now),
    "timing.is_last_line": lambda s, now: timing.is_last_line(s),
    "timing.patience": lambda s, now: timing.patience(s, now),
    "steps.carrier_retry": lambda s, now: steps.carrier_retry(s),
    "steps.activation_retry": lambda s, now: steps.activation_retry(s),
    "steps.confirm_retry": lambda s, now: steps.confirm_retry(s),
    "rotation.next_step": lambda s, now: rotation.next_step(s, now, rotation.Run()),
    "rotation.wake_at": rotation.wake_at,
    "timing.policy_problem": lambda s, now: policy_problem(s.policy, s.active.validity_seconds),
}
CASES = list(itertools.product(ALLOWANCES, VALIDITIES, USAGE, POLICIES, RESETS))


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_answers_for_a_line_without_allowance_or_validity(rule: str) -> None:
    for allowance, validity, (used, before), policy, reset in CASES:
        s = _state(_line(allowance, validity, used, before), policy, reset)
        for now in (T0, T0 + timedelta(seconds=11), T0 + timedelta(days=2)):
            RULES[rule](s, now)  # raises, as a workflow task would fail, on a division by 0


@pytest.mark.parametrize("allowance", [0, -1])
def test_usage_never_rotates_a_line_without_allowance(allowance: int) -> None:
    for validity, (used, before), policy, reset in itertools.product(
        VALIDITIES, USAGE, POLICIES, RESETS
    ):
        line = _line(allowance, validity, used, before)
        now = T0 + timedelta(seconds=11)
        assert usage.fraction(line) == 0.0
        assert usage.projected_exhaustion(line) is None
        assert not usage.order_due(line, policy, now)
        assert not usage.switch_due(line, policy, now)
        s = _state(line, policy, reset)
        assert usage.next_check(line, policy, now, timing.switch_at(s)) is None
        assert usage.crossed(0, used, allowance) == []
