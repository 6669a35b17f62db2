"""The day's cost caps of a Balance (``max_lines_per_day``, ``max_spend_per_day``): what a
line bought spends, when a cap holds the eSIM on its line (throttled), and the lift at
00:00 UTC. Pure, as the rest of the rotation core; the moments are in ``workflows.timing``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models import money
from models.payloads import BalanceState, BalanceStatus, Line
from workflows import timing, usage
from workflows.events import note


def newly_reached(s: BalanceState, now: datetime) -> bool:
    return (
        not s.capped
        and s.active is not None
        and usage.switch_due(s.active, s.policy, now)
        and timing.cap_reached(s, now)
        and not timing.next_starts_on_its_own(s)
    )


def throttle(s: BalanceState, now: datetime) -> None:
    """At the switch threshold with the day's cap spent: stay on the line and say so.
    Once it is used up the eSIM is throttled, or has no service where the carrier ends a
    used-up pass (``when_used_up``). Which cap, and when it lifts where it does."""
    assert s.active is not None
    s.capped = True
    s.status = BalanceStatus.Throttled
    lifts = timing.cap_lifts_at(s, now)
    note(
        s,
        "cap_reached",
        now,
        seq=s.active.seq,
        cap="lines" if timing.lines_cap_reached(s, now) else "spend",
        max_lines_per_day=s.policy.max_lines_per_day,
        **spend_figures(s, now),
        when_used_up="no service" if timing.used_up_ends(s) else "throttled",
        **({"lifts_at": lifts.isoformat()} if lifts else {}),
    )


def cap_lifts(s: BalanceState, now: datetime) -> bool:
    """The day has rolled over a capped balance's cap (it wakes at 00:00 UTC for it)."""
    return (
        s.capped
        and bool(s.cap_lifts_at_midnight)
        and s.active is not None
        and not timing.cap_reached(s, now)
    )


def lift_cap(s: BalanceState, now: datetime) -> None:
    """A new day: the cap no longer holds the eSIM back, and the next step (a switch by
    usage where the line is spent) brings it back to high speed."""
    s.capped = False
    if s.status == BalanceStatus.Throttled:
        s.status = BalanceStatus.Active
    assert s.active is not None
    note(s, "cap_lifted", now, seq=s.active.seq)


def spend_figures(s: BalanceState, now: datetime) -> dict[str, Any]:
    """The spend cap's figures for an event, where the policy sets one."""
    cap = s.policy.max_spend_per_day
    if cap is None:
        return {}
    currency = (s.next_product or s.product).currency
    spent = timing.spent_today(s, now, currency)
    return {
        "max_spend_per_day": money.amount(money.cents(cap)),
        "spent_today": money.amount(spent),
        "currency": currency,
    }


def spent(s: BalanceState, line: Line, now: datetime) -> None:
    """Line bought: its price counts in the balance's spend, and in that of the UTC day it
    was ordered on (for ``max_spend_per_day``). A line without a price (ordered by a worker
    from before prices were recorded) counts in neither."""
    if line.price_cents is None:
        return
    currency = line.currency or (s.next_product or s.product).currency
    day = (line.ordered_at or now).date()
    if s.spend_day != day:
        s.spend_day, s.spend_today_cents = day, {}
    money.add(s.spend_cents, currency, line.price_cents)
    money.add(s.spend_today_cents, currency, line.price_cents)
