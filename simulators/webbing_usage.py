"""What the Webbing-like carrier reports as usage: readings taken in batches, so late.

Chosen (usage latency is not public): the carrier rates usage in batches: a pass is read
again once its last reading is ``lag`` old, and the usage it reports is that of its last
reading. A figure is therefore 0 to ``lag`` (plus a tick) behind the traffic. The lag is
per kind of product: a few seconds for compressed-time products (default 2 s), minutes
for real ones (default 300 s); 0 reads live. A pass never read reports 0.

Two counters per pass: high-speed bytes (the engine's count, up to the allowance: a
device's ``DataUsage``) and throttled bytes (with them, ``TotalUsage`` of GetDeviceUsage).
The engine does not count throttled traffic, so the throttled counter is estimated at
each reading: the ICCID's throttled seconds since the last reading while this pass was
active, times its traffic rate capped at the product's throttle speed. Readings live in
memory only: after a restart the throttled counters start again from 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from simulators.core import CarrierEngine
from simulators.records import Interval, Package

DAY = 86_400


class UsageLag(BaseModel):
    """How far reported usage may trail the traffic, in seconds (``/_sim/usage-lag``)."""

    model_config = ConfigDict(extra="forbid")

    compressed_seconds: float = Field(default=2.0, ge=0)
    real_seconds: float = Field(default=300.0, ge=0)


@dataclass(frozen=True)
class Reading:
    at: float
    high_speed_bytes: int
    throttled_bytes: float = 0.0


class UsageMeter:
    """The readings of every pass of one engine. Use it from the engine's loop."""

    def __init__(self, engine: CarrierEngine, lag: UsageLag | None = None) -> None:
        self.engine = engine
        self.lag = lag or UsageLag()
        self._readings: dict[str, Reading] = {}
        # Passes whose usage may still change; an ended one leaves after a last reading.
        self._tracked = {p.id for p in engine.packages()}

    def track(self, package: Package) -> None:
        """Starts reading a newly sold pass."""
        self._tracked.add(package.id)

    def lag_of(self, package: Package) -> float:
        product = self.engine.products.get(package.product_id)
        compressed = product.compressed if product is not None else False
        return self.lag.compressed_seconds if compressed else self.lag.real_seconds

    def tick_seconds(self) -> float:
        """How often :meth:`take_readings` should run to keep each lag."""
        lags = [s for s in (self.lag.compressed_seconds, self.lag.real_seconds) if s > 0]
        return min(1.0, max(0.05, min(lags, default=1.0) / 4))

    def take_readings(self) -> None:
        """Reads every tracked pass whose last reading is at least its lag old."""
        now = self.engine.advance()
        for package_id in list(self._tracked):
            package = self.engine.package(package_id)  # brings its usage up to now
            last = self._readings.get(package_id)
            if package.activated_at is None:
                if package.status == "TERMINATED":  # cancelled before it served
                    self._tracked.discard(package_id)
                continue
            if last is None or now - last.at >= self.lag_of(package):
                last = self._read(package, now)
            if self._final(package, last):
                self._tracked.discard(package_id)

    def reading(self, package: Package) -> Reading:
        """What the carrier reports for this pass now."""
        if self.lag_of(package) == 0:
            package = self.engine.package(package.id)  # brings its usage up to now
            if package.activated_at is not None:
                return self._read(package, self.engine.advance())
        last = self._readings.get(package.id)
        if last is not None:
            return last
        return Reading(package.activated_at or package.ordered_at, 0)

    def _read(self, package: Package, now: float) -> Reading:
        last = self._readings.get(package.id)
        throttled = last.throttled_bytes if last is not None else 0.0
        assert package.activated_at is not None
        start = max(last.at if last is not None else package.activated_at, package.activated_at)
        end = min(now, package.terminated_at if package.terminated_at is not None else now)
        if package.exhausted and end > start:
            seconds = _throttled_seconds(self.engine.timeline(package.iccid), start, end)
            product = self.engine.products.get(package.product_id)
            cap = product.throttle_kbps * 1000 / 8 if product is not None else 0.0
            throttled += seconds * min(self.engine.traffic(package.iccid), cap)
        reading = Reading(now, int(package.used_bytes), throttled)
        self._readings[package.id] = reading
        return reading

    @staticmethod
    def _final(package: Package, last: Reading | None) -> bool:
        """An ended pass read after its end changes no more."""
        ended = package.terminated_at
        return ended is not None and last is not None and last.at >= ended


def usage_by_day(
    packages: list[Package], meter: UsageMeter, since: float, until: float
) -> dict[float, float]:
    """Bytes used (high-speed and throttled, as last read) per UTC day in [since, until),
    keyed by the day's start. A pass's reported usage is spread evenly over the time it
    served up to its reading: the carrier's batches carry no finer times."""
    days: dict[float, float] = {}
    for package in packages:
        if package.activated_at is None:
            continue
        reading = meter.reading(package)
        used = reading.high_speed_bytes + reading.throttled_bytes
        start = package.activated_at
        end = min(reading.at, package.terminated_at or reading.at)
        if used <= 0:
            continue
        if end <= start:
            if since <= start < until:
                day = start - start % DAY
                days[day] = days.get(day, 0.0) + used
            continue
        day = start - start % DAY
        while day < end:
            low, high = max(day, start, since), min(day + DAY, end, until)
            if high > low:
                days[day] = days.get(day, 0.0) + used * (high - low) / (end - start)
            day += DAY
    return days


def _throttled_seconds(intervals: list[Interval], start: float, end: float) -> float:
    total = 0.0
    for interval in intervals:
        if interval.state != "throttled":
            continue
        low = max(interval.start, start)
        high = min(interval.end if interval.end is not None else end, end)
        total += max(0.0, high - low)
    return total
