"""One ICCID at the carrier: its packages, device traffic and service timeline in time."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from simulators.records import (
    USAGE_THRESHOLDS,
    Interval,
    Journal,
    LedgerAction,
    LineState,
    Package,
)


@dataclass
class SimCard:
    """An ICCID in the inventory. ``traffic`` None means the carrier-wide default rate."""

    iccid: str
    traffic: float | None = None
    packages: list[Package] = field(default_factory=list)
    timeline: list[Interval] = field(default_factory=list)

    @property
    def live(self) -> bool:
        """Whether anything can still happen to it in time."""
        return any(p.status != "TERMINATED" for p in self.packages)

    def run(self, start: float, end: float, rate: float, journal: Journal) -> bool:
        """Replays every event in (start, end] in time order; True if anything changed.

        Usage accrues piecewise on the consuming package between events; the next event is
        the earliest of a due activation, an expiry and the next usage threshold crossing.
        """
        changed = False
        t = start
        while True:
            consumer = self._consumer()
            until, crossing = end, None
            for p in self.packages:
                due = p.activation_due_at if p.status == "NOT_ACTIVE" else None
                due = p.expires_at if p.status == "ACTIVE" else due
                if due is not None and max(due, t) < until:
                    until = max(due, t)
            if consumer is not None and rate > 0:
                target = _next_threshold(consumer)
                at = t + max(0.0, target - consumer.used_bytes) / rate
                if at <= until:
                    until, crossing = at, target
            if consumer is not None and rate > 0 and until > t:
                used = consumer.used_bytes + rate * (until - t)
                # Snap to the threshold so float error can never postpone the crossing.
                consumer.used_bytes = crossing if crossing is not None else used
                changed = True
            t = until
            if not self._fire(t, journal):
                return changed
            changed = True

    def end(self, package: Package, at: float, action: LedgerAction, journal: Journal) -> None:
        package.status, package.terminated_at = "TERMINATED", at
        journal.record(at, action, package)
        journal.alert("status", at, package, reason=action)

    def update_timeline(self, t: float) -> None:
        state = self._state()
        intervals = self.timeline
        if not intervals:
            if state != "none":
                intervals.append(Interval(state, t))
            return
        if intervals[-1].state == state:
            return
        if intervals[-1].start >= t:
            # Several changes in one instant: keep the last, never a zero-length interval.
            intervals.pop()
            if intervals and intervals[-1].state == state:
                intervals[-1].end = None
                return
            if not intervals and state == "none":
                return
        if intervals:
            intervals[-1].end = t
        intervals.append(Interval(state, t))

    def _fire(self, t: float, journal: Journal) -> bool:
        fired = False
        for p in self.packages:
            if p.status != "ACTIVE":
                continue
            for percent in USAGE_THRESHOLDS:
                if percent not in p.alerted and p.used_bytes >= p.allowance_bytes * percent / 100:
                    p.alerted.append(percent)
                    if percent == 100:
                        journal.record(t, "exhaust", p)
                    journal.alert("usage_threshold", t, p, threshold_percent=percent)
                    fired = True
        for p in self.packages:
            if p.status == "ACTIVE" and p.expires_at is not None and p.expires_at <= t:
                self.end(p, p.expires_at, "expire", journal)
                fired = True
        for p in self.packages:
            due = p.activation_due_at
            if p.status == "NOT_ACTIVE" and due is not None and due <= t:
                p.status, p.activated_at = "ACTIVE", due
                p.expires_at = due + p.validity_seconds
                journal.record(due, "activate", p)
                fired = True
        if fired:
            self.update_timeline(t)
        return fired

    def _consumer(self) -> Package | None:
        """The package that takes the traffic: the most recently activated with allowance."""
        best: Package | None = None
        for p in self.packages:
            if p.status == "ACTIVE" and not p.exhausted:
                if best is None or (p.activated_at or 0.0) >= (best.activated_at or 0.0):
                    best = p
        return best

    def _state(self) -> LineState:
        active = [p for p in self.packages if p.status == "ACTIVE"]
        if not active:
            return "none"
        return "throttled" if all(p.exhausted for p in active) else "high_speed"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimCard:
        return cls(
            iccid=data["iccid"],
            traffic=data["traffic"],
            packages=[Package.from_dict(p) for p in data["packages"]],
            timeline=[Interval(**i) for i in data["timeline"]],
        )


def _next_threshold(package: Package) -> float:
    pending = [pc for pc in USAGE_THRESHOLDS if pc not in package.alerted]
    return package.allowance_bytes * min(pending, default=100) / 100
