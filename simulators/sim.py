"""One ICCID at the carrier: its packages, device traffic and service timeline in time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulators.records import (
    FIRST_USE,
    USAGE_THRESHOLDS,
    Interval,
    Journal,
    LedgerAction,
    LineState,
    Package,
)
from simulators.windows import window_end_epoch


@dataclass
class SimCard:
    """An ICCID in the inventory, brought up to date lazily, on its own, to any time.

    ``traffic`` None means the carrier-wide default rate; ``advanced_to`` is the time up to
    which its events and usage have been applied. A ``suspended`` ICCID has no package
    open; ``status_changed_at`` is when it was last suspended or resumed.
    """

    iccid: str
    advanced_to: float
    traffic: float | None = None
    packages: list[Package] = field(default_factory=list)
    timeline: list[Interval] = field(default_factory=list)
    added_at: float | None = None
    suspended: bool = False
    status_changed_at: float | None = None
    # On no device (eSIM Go: marked not installed): it never attaches, so no queued
    # package starts.
    detached: bool = False

    def open_packages(self) -> list[Package]:
        return [p for p in self.packages if p.status != "TERMINATED"]

    def in_place_due_after(self, package: Package) -> float | None:
        """When the in-place changes asked for before ``package`` take effect, at the
        latest: changes of one product take effect in the order they were asked for."""
        earlier = self.packages[: self.packages.index(package)]
        dues = [
            p.activation_due_at
            for p in earlier
            if p.in_place and p.status == "NOT_ACTIVE" and p.activation_due_at is not None
        ]
        return max(dues, default=None)

    def run(self, end: float, rate: float, journal: Journal, *, used_up_ends: bool = False) -> bool:
        """Replays every event up to ``end`` in time order; True if anything changed.

        Usage accrues piecewise on the consuming package between events; the next event is
        the earliest of a due activation, an expiry and the next usage threshold crossing.
        Events due exactly at ``advanced_to`` (e.g. a zero-latency activation) fire too.
        With ``used_up_ends`` a package (other than an in-place one) whose data is used up
        ends then: ``exhaust``, then ``expire`` at the same instant (its carrier ended it).
        """
        changed = False
        t = self.advanced_to
        end = max(end, t)
        packages = self.open_packages()
        while True:
            until, crossing, consumer = self._next_event(packages, t, end, rate)
            if crossing is not None and consumer is not None:
                # Snap to the threshold so float error can never postpone the crossing.
                consumer.used_bytes = crossing
                changed = True
            elif consumer is not None and rate > 0 and until > t:
                consumer.used_bytes += rate * (until - t)
                changed = True
            t = until
            if not self._fire(packages, t, journal, used_up_ends):
                break
            changed = True
            packages = self.open_packages()
        self.advanced_to = end
        return changed

    def next_event_at(self, rate: float) -> float | None:
        """When something will next happen to this ICCID at this traffic rate, if ever."""
        inf = float("inf")
        at, _, _ = self._next_event(self.open_packages(), self.advanced_to, inf, rate)
        return None if at == inf else at

    def _next_event(
        self, packages: list[Package], t: float, end: float, rate: float
    ) -> tuple[float, float | None, Package | None]:
        """(time of the next event or ``end``, usage at it if a threshold, the consumer)."""
        consumer = _consumer(packages)
        until, crossing = end, None
        for p in packages:
            due = p.activation_due_at if p.status == "NOT_ACTIVE" else p.expires_at
            if p.spent:
                due = None  # past its window already: nothing more happens to it by time
            if due is not None and max(due, t) < until:
                until = max(due, t)
            ready = p.available_at
            # A queued package's processing ending is an event only if it will start then:
            # with a package serving, it starts when that one ends (an event of its own).
            if (
                p.queued
                and p.status == "NOT_ACTIVE"
                and consumer is None
                and ready is not None
                and not self.detached
            ):
                if t < ready < until:
                    until = ready
        if consumer is not None and rate > 0:
            target = _next_threshold(consumer)
            at = t + max(0.0, target - consumer.used_bytes) / rate
            if at <= until:
                until, crossing = at, target
        return until, crossing, consumer

    def end(self, package: Package, at: float, action: LedgerAction, journal: Journal) -> None:
        package.status, package.terminated_at = "TERMINATED", at
        if package.in_place and package.activated_at is None:
            return  # a change withdrawn before it took effect was never bought
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

    def _fire(
        self, packages: list[Package], t: float, journal: Journal, used_up_ends: bool = False
    ) -> bool:
        fired = False
        for p in packages:
            if p.status != "ACTIVE":
                continue
            for percent, at_bytes in _thresholds(p):
                if percent not in p.alerted and p.used_bytes >= at_bytes:
                    p.alerted.append(percent)
                    if percent == 100:
                        journal.record(t, "exhaust", p)
                    journal.alert("usage_threshold", t, p, threshold_percent=percent)
                    fired = True
            if used_up_ends and not p.in_place and p.allowance_bytes > 0 and 100 in p.alerted:
                # The carrier ends a used-up package: it serves no more, not even throttled.
                # One without a data allowance has nothing to use up, and is not ended for it.
                self.end(p, t, "expire", journal)
                fired = True
        for p in packages:
            if p.status == "ACTIVE" and p.expires_at is not None and p.expires_at <= t:
                if p.spent:
                    continue
                if p.in_place:  # the product stays, at the throttled speed, until replaced
                    p.spent = True
                    journal.record(p.expires_at, "exhaust", p)
                else:
                    self.end(p, p.expires_at, "expire", journal)
                fired = True
        for p in packages:
            due = p.activation_due_at
            if p.status == "NOT_ACTIVE" and due is not None and due <= t:
                if p.in_place:
                    journal.record(due, "order", p)
                p.status, p.activated_at = "ACTIVE", due
                p.expires_at = window_end_epoch(
                    due, p.validity_seconds, p.reset, p.reset_utc_offset_minutes
                )
                journal.record(due, "activate", p)
                if p.in_place:
                    # Make before break, in one instant: the timeline shows no gap.
                    for old in packages:
                        if old is not p and old.status == "ACTIVE":
                            self.end(old, due, "deactivate", journal)
                fired = True
        if not any(p.status == "ACTIVE" for p in packages):
            waiting = [p for p in packages if p.status == "NOT_ACTIVE" and p.auto]
            if waiting:
                p = waiting[0]  # the oldest order attaches first
                p.status, p.activated_at, p.activation_due_at = "ACTIVE", t, t
                p.expires_at = window_end_epoch(
                    t, p.validity_seconds, p.reset, p.reset_utc_offset_minutes
                )
                journal.record(t, "activate", p)
                fired = True
        if not self.detached and not any(
            p.status == "ACTIVE" and not p.exhausted for p in packages
        ):
            ready = [
                p
                for p in packages
                if p.queued and p.status == "NOT_ACTIVE" and (p.available_at or 0.0) <= t
            ]
            if ready:
                p = min(ready, key=lambda q: q.validity_seconds)  # min keeps the oldest of ties
                p.status, p.activated_at, p.activation_due_at = "ACTIVE", t, t
                p.expires_at = window_end_epoch(
                    t, p.validity_seconds, p.reset, p.reset_utc_offset_minutes
                )
                journal.record(t, "activate", p)
                fired = True
        if fired:
            self.update_timeline(t)
        return fired

    def _state(self) -> LineState:
        active = [p for p in self.packages if p.status == "ACTIVE"]
        if not active:
            return "none"
        return "throttled" if all(p.exhausted for p in active) else "high_speed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "iccid": self.iccid,
            "advanced_to": self.advanced_to,
            "traffic": self.traffic,
            "packages": [p.to_dict() for p in self.packages],
            "timeline": [[i.state, i.start, i.end] for i in self.timeline],
            "added_at": self.added_at,
            "suspended": self.suspended,
            "status_changed_at": self.status_changed_at,
            "detached": self.detached,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SimCard:
        return cls(
            iccid=data["iccid"],
            advanced_to=float(data["advanced_to"]),
            traffic=data["traffic"],
            packages=[Package.from_dict(p) for p in data["packages"]],
            timeline=[Interval(state, start, end) for state, start, end in data["timeline"]],
            added_at=data.get("added_at"),
            suspended=bool(data.get("suspended", False)),
            status_changed_at=data.get("status_changed_at"),
            detached=bool(data.get("detached", False)),
        )


def _consumer(packages: list[Package]) -> Package | None:
    """The package that takes the traffic: the most recently activated with allowance."""
    best: Package | None = None
    for p in packages:
        if p.status == "ACTIVE" and not p.exhausted:
            if best is None or (p.activated_at or 0.0) >= (best.activated_at or 0.0):
                best = p
    return best


def _thresholds(package: Package) -> list[tuple[int, float]]:
    """(percent, usage in bytes) of every alert of a package, FIRST_USE included if any."""
    marks = [(pc, package.allowance_bytes * pc / 100) for pc in USAGE_THRESHOLDS]
    if package.first_use_bytes is not None:
        marks.insert(0, (FIRST_USE, float(min(package.first_use_bytes, package.allowance_bytes))))
    return marks


def _next_threshold(package: Package) -> float:
    pending = [at for pc, at in _thresholds(package) if pc not in package.alerted]
    return min(pending, default=float(package.allowance_bytes))
