"""Usage projection for early rotation: pure, deterministic functions of a line's usage.

Usage arrives as observations (webhooks at 50/80/100 %, pollers, our own checks). Two
observations give a rate, and the rate a projected exhaustion time. That time acts like a
second window end: the next line is ordered ``lead`` before it and the switch starts
``margin`` before it, so a heavy user is moved before the allowance runs out, not after.
The explicit thresholds (pre-order 80 %, switch 95 %) apply whatever the projection says.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from models.payloads import Line, Policy

# Never check usage more often than this fraction of a line's validity (and 1 s).
MIN_CHECK_FRACTION = 1 / 200


def fraction(line: Line) -> float:
    """The share of the allowance used. A line without an allowance has none to steer by:
    the carrier clients refuse such a package, and should one come all the same, 0 keeps
    the workflow task from failing and usage from buying a pass per loop."""
    if line.allowance_bytes <= 0:
        return 0.0
    return line.used_bytes / line.allowance_bytes


def rate(line: Line) -> float | None:
    """Bytes per second between the last two observations, if there are two."""
    if line.prev_observed_at is None or line.usage_observed_at is None:
        return None
    seconds = (line.usage_observed_at - line.prev_observed_at).total_seconds()
    used = line.used_bytes - line.prev_used_bytes
    return used / seconds if seconds > 0 and used > 0 else None


def projected_exhaustion(line: Line) -> datetime | None:
    """When the allowance runs out at the last observed rate."""
    speed = rate(line)
    if speed is None or line.usage_observed_at is None or line.allowance_bytes <= 0:
        return None  # no allowance, no projection (see fraction)
    left = max(0, line.allowance_bytes - line.used_bytes)
    return line.usage_observed_at + timedelta(seconds=left / speed)


def order_due(line: Line, policy: Policy, now: datetime) -> bool:
    """Pre-order: the threshold is reached, or exhaustion is within the lead."""
    if fraction(line) >= policy.preorder_fraction:
        return True
    end = projected_exhaustion(line)
    return end is not None and now >= end - timedelta(seconds=policy.lead(line.validity_seconds))


def switch_due(line: Line, policy: Policy, now: datetime, by_carrier: bool = False) -> bool:
    """Switch: the threshold is reached, or a fresh projection puts exhaustion within
    the margin (a stale projection is checked first, see ``next_check``). ``by_carrier``:
    the carrier switches itself once the pass is used up (a queued carrier): due only
    when it is seen used up, since nothing we do before would be make-before-break."""
    if by_carrier:
        return fraction(line) >= 1.0
    if fraction(line) >= policy.switch_fraction:
        return True
    end = projected_exhaustion(line)
    if end is None or line.usage_observed_at is None:
        return False
    margin = timedelta(seconds=policy.margin(line.validity_seconds))
    fresh = now - line.usage_observed_at <= max(margin, timedelta(seconds=1))
    return fresh and now >= end - margin


def next_check(
    line: Line, policy: Policy, now: datetime, switch_at: datetime, by_carrier: bool = False
) -> datetime | None:
    """When to read usage again: when the switch threshold or the projected switch point
    should be reached (``by_carrier``: when the pass should be used up, see
    ``switch_due``) — unless the time-based switch comes first anyway."""
    speed = rate(line)
    end = projected_exhaustion(line)
    if speed is None or end is None or line.usage_observed_at is None:
        return None
    share = 1.0 if by_carrier else policy.switch_fraction
    if fraction(line) >= share:
        return None
    to_threshold = share * line.allowance_bytes - line.used_bytes
    margin = 0.0 if by_carrier else policy.margin(line.validity_seconds)
    at = min(
        line.usage_observed_at + timedelta(seconds=to_threshold / speed),
        end - timedelta(seconds=margin),
    )
    if at >= switch_at:
        return None
    soonest = now + timedelta(seconds=max(1.0, line.validity_seconds * MIN_CHECK_FRACTION))
    return max(at, soonest)


# Usage thresholds announced as ``usage_threshold`` events, in percent of the allowance.
THRESHOLDS = (50, 80, 95, 100)


def crossed(before: int, after: int, allowance: int) -> list[int]:
    """The thresholds that usage going from ``before`` to ``after`` bytes reaches."""
    return [p for p in THRESHOLDS if before < allowance * p / 100 <= after]
