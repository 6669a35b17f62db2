"""When a balance orders and switches: pure, deterministic functions of its state.

Make before break: the next line is ordered ``lead`` before the active one ends, and
activated ``margin`` before it ends (or at the reset boundary itself, for passes whose
window ends there). Usage moves both moments earlier (see ``workflows.usage``) unless the
balance's cost cap for the UTC day is reached. The workflow asks these functions and
sleeps until the earliest answer; they read only the state and the time given, so every
replay computes the same moments.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, time, timedelta

from models import money
from models.payloads import BalanceState, Line
from workflows import usage

# The part of the lead window over which a reset boundary's orders are spread.
ORDER_SPREAD = 2 / 3
SAFETY_NET_EARLY = timedelta(seconds=1)


def ends_at(line: Line) -> datetime:
    if line.ends_at is not None:
        return line.ends_at
    assert line.activated_at is not None
    return line.activated_at + timedelta(seconds=line.validity_seconds)


def in_place(s: BalanceState) -> bool:
    """Whether the next line's carrier replaces a device's one product in place: nothing
    is bought ahead there, the purchase (a product change) is the switch."""
    return (s.next_product or s.product).rotation == "in_place"


def order_at(s: BalanceState) -> datetime:
    """``lead`` before the line ends (in place: at the switch, see ``in_place``). Lines
    that end at a reset boundary end with thousands of others (the midnight herd): those
    are ordered at a moment spread over the first two thirds of the lead window by a hash
    of the balance id, the same on every replay, so the carrier sees a smooth rate
    instead of one burst. The last third stays for retries before the switch."""
    assert s.active is not None
    if in_place(s):
        return switch_at(s)
    lead = s.policy.lead(s.active.validity_seconds)
    at = ends_at(s.active) - timedelta(seconds=lead)
    if s.product.reset != "rolling":
        spread = zlib.crc32(s.balance_id.encode()) / 2**32
        at += timedelta(seconds=round(lead * ORDER_SPREAD * spread, 3))
    return at


def safety_net_start(s: BalanceState) -> datetime:
    """When the carrier should start the next line by itself, should our own switch not
    have happened: at a reset boundary the boundary itself (a line started before it would
    end at it); otherwise a second before the old line's end, since the end we compute
    comes from the carrier's reported, rounded activation time and a start rounded the
    other way would leave a gap of a fraction of a second."""
    assert s.active is not None
    end = ends_at(s.active)
    return end if s.product.reset != "rolling" else end - SAFETY_NET_EARLY


def carrier_switches(s: BalanceState) -> bool:
    """Whether the carrier itself starts the next line as the active one ends by time:
    passes whose window ends at a reset boundary (a queued start, ordered with
    ``start_at``; in place, the change bought at the boundary), and passes of a queued
    carrier (the next one starts on attach)."""
    return s.product.reset != "rolling" or (s.next_product or s.product).rotation == "queued"


def used_up_ends(s: BalanceState) -> bool:
    """Whether the active line's carrier ends a pass whose data is used up. Where passes
    stack (queued, activated), each is a package of its own, which ends then (Telna:
    TERMINATED, CARRIERS.md 2.6): the eSIM has no service on it, not a throttled speed.
    In place, the one product stays on the device at the throttled speed until replaced."""
    return s.product.rotation != "in_place"


def ended_used_up(s: BalanceState) -> bool:
    """The active line's data is used up where that ends it at the carrier."""
    return s.active is not None and s.active.exhausted_at is not None and used_up_ends(s)


def next_starts_on_its_own(s: BalanceState) -> bool:
    """The scheduled line has started already: the active one ended, used up, and the
    next is one the carrier starts on attach (queued), as the SIM has no active line."""
    return s.scheduled is not None and ended_used_up(s) and queued_next(s)


def switch_at(s: BalanceState) -> datetime:
    """``margin`` before the line ends — except where the carrier switches itself
    (``carrier_switches``): a line activated before a reset boundary would end at it too,
    and a queued carrier starts the next line as the old one ends. Those switch at the
    line's end, and only confirm the carrier's start."""
    assert s.active is not None
    if carrier_switches(s):
        return ends_at(s.active)
    margin = s.policy.margin(s.active.validity_seconds)
    return ends_at(s.active) - timedelta(seconds=margin)


def order_due(s: BalanceState, now: datetime) -> bool:
    assert s.active is not None
    if in_place(s):  # the purchase is the switch: bought when the switch is due
        return bool(switch_reason(s, now))
    if s.rotate_requested or now >= order_at(s):
        return True
    return usage.order_due(s.active, s.policy, now) and not holds_back(s, now)


def holds_back(s: BalanceState, now: datetime) -> bool:
    """At the day's cost cap, nothing is bought ahead by usage for a carrier that starts
    the next line on its own the moment the active one is used up (a queued carrier whose
    used-up passes end): it would start past the cap. Nor is anything bought by usage
    that would take the day's spend past its cap. The next line comes by time."""
    return (cap_reached(s, now) and queued_next(s)) or spend_cap_reached(s, now)


def carrier_switches_by_usage(s: BalanceState) -> bool:
    """Whether the carrier itself moves the eSIM on once the active pass is used up: it
    ends a used-up pass (``used_up_ends``) and starts the next queued one on attach (DESIGN
    section 5, queued: "the old one ends by itself"). The switch by usage is then the
    carrier's, and the workflow only confirms it: the pass serves all its allowance, and
    nothing relies on a call to start a queued pass early (eSIM Go has none)."""
    return bool(s.queued_by_carrier) and queued_next(s)


def queued_next(s: BalanceState) -> bool:
    """The active pass ends when used up, and the next one is queued: it starts on attach."""
    return used_up_ends(s) and (s.next_product or s.product).rotation == "queued"


def switch_reason(s: BalanceState, now: datetime) -> str:
    """Why the balance should switch now ("operator", "time", "usage"), or ""."""
    if s.rotate_requested:
        return "operator"
    if now >= switch_at(s):
        return "time"
    assert s.active is not None
    by_carrier = carrier_switches_by_usage(s)
    if usage.switch_due(s.active, s.policy, now, by_carrier) and (
        not cap_reached(s, now) or next_starts_on_its_own(s)
    ):
        # At the cap too once the carrier has started the next line by itself: only
        # confirmed, nothing is bought or started.
        return "usage"
    return ""


def cap_reached(s: BalanceState, now: datetime) -> bool:
    """The day's (UTC) cost cap is spent: in lines, or in money."""
    return lines_cap_reached(s, now) or spend_cap_reached(s, now)


def lines_cap_reached(s: BalanceState, now: datetime) -> bool:
    """``max_lines_per_day`` lines were confirmed active today."""
    cap = s.policy.max_lines_per_day
    return cap is not None and s.day == now.date() and s.lines_today >= cap


def spend_cap_reached(s: BalanceState, now: datetime) -> bool:
    """Buying the next line would take today's spend past ``max_spend_per_day``. Spend
    is what was bought today, in the currency of the product to buy; a next line
    already bought costs nothing more to switch to."""
    cap = s.policy.max_spend_per_day
    if cap is None or s.scheduled is not None:
        return False
    product = s.next_product or s.product
    return spent_today(s, now, product.currency) + product.price_cents > money.cents(cap)


def spent_today(s: BalanceState, now: datetime, currency: str) -> int:
    """Minor units of ``currency`` the balance's lines ordered today (UTC) cost."""
    return s.spend_today_cents.get(currency, 0) if s.spend_day == now.date() else 0


def cap_lifts_at(s: BalanceState, now: datetime, capping: bool = False) -> datetime | None:
    """When a capped balance's cap (or one ``capping`` now) lifts by itself: the next
    00:00 UTC. None if it is not capped, or ran before the workflow woke for it (its cap
    lifted as its line ended)."""
    if not ((s.capped or capping) and s.cap_lifts_at_midnight):
        return None
    return datetime.combine(now.date() + timedelta(days=1), time(0), tzinfo=UTC)


def term_done(s: BalanceState) -> bool:
    return s.lines_total is not None and s.last_seq >= s.lines_total


def is_last_line(s: BalanceState) -> bool:
    return term_done(s) and s.scheduled is None


def patience(s: BalanceState, now: datetime) -> datetime:
    """When a step with no line deadline (the first line, a resume) shows Failing: after
    a quarter of the validity, between 1 s and 60 s."""
    quarter = s.product.validity_seconds / 4
    return now + timedelta(seconds=min(60.0, max(1.0, quarter)))
