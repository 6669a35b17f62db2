"""A carrier client that times every call and counts its errors, whatever the carrier.

Wrapping the ``Carrier`` interface once (``build_carriers`` does) measures every
operation of every client alike, so a new operation or carrier cannot go unmeasured.
Latency is observed for answered calls and failed ones alike (a timeout is latency
too); a cancelled call is neither.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram

from carriers.base import Carrier, CarrierLine, CarrierProduct, LineUsage
from carriers.errors import (
    CarrierError,
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
)

T = TypeVar("T")

# The carrier calls' metrics, in a registry of their own that the worker's registry
# (``services.metrics.REGISTRY``) collects and serves.
REGISTRY = CollectorRegistry()
carrier_calls = Histogram(
    "esim_carrier_call_seconds",
    "Latency of carrier API calls, by carrier and operation.",
    ["carrier", "operation"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
carrier_errors = Counter(
    "esim_carrier_call_errors",
    "Failed carrier API calls, by carrier, operation and kind (rejected, unavailable, "
    "outcome_unknown).",
    ["carrier", "operation", "kind"],
    registry=REGISTRY,
)


def error_kind(error: CarrierError) -> str:
    """The ``kind`` label of a carrier error: its branch of the error tree."""
    if isinstance(error, CarrierRejected):
        return "rejected"
    if isinstance(error, CarrierUnavailable):
        return "unavailable"
    if isinstance(error, CarrierOutcomeUnknown):
        return "outcome_unknown"
    return "other"


class MeteredCarrier:
    """``inner`` with each call timed in ``esim_carrier_call_seconds`` and each
    ``CarrierError`` counted in ``esim_carrier_call_errors`` (carrier, operation, kind)."""

    def __init__(self, inner: Carrier) -> None:
        self.inner = inner
        self.name = inner.name
        self.in_doubt_seconds = inner.in_doubt_seconds

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            result = await call()
        except CarrierError as error:
            carrier_errors.labels(self.name, operation, error_kind(error)).inc()
            carrier_calls.labels(self.name, operation).observe(time.perf_counter() - started)
            raise
        carrier_calls.labels(self.name, operation).observe(time.perf_counter() - started)
        return result

    async def list_products(self) -> list[CarrierProduct]:
        return await self._call("list_products", self.inner.list_products)

    async def order(
        self,
        iccid: str,
        carrier_product_id: str,
        reference: str,
        start_at: datetime | None = None,
    ) -> CarrierLine:
        return await self._call(
            "order", lambda: self.inner.order(iccid, carrier_product_id, reference, start_at)
        )

    async def activate(self, line_id: str) -> CarrierLine:
        return await self._call("activate", lambda: self.inner.activate(line_id))

    async def deactivate(self, line_id: str) -> CarrierLine:
        return await self._call("deactivate", lambda: self.inner.deactivate(line_id))

    async def get_line(self, line_id: str) -> CarrierLine:
        return await self._call("get_line", lambda: self.inner.get_line(line_id))

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        return await self._call("find_lines", lambda: self.inner.find_lines(iccid))

    async def open_lines(self, iccid: str, carrier_product_id: str) -> list[CarrierLine]:
        return await self._call(
            "open_lines", lambda: self.inner.open_lines(iccid, carrier_product_id)
        )

    async def usage(self, line_id: str) -> LineUsage:
        return await self._call("usage", lambda: self.inner.usage(line_id))

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        """Operations beyond ``Carrier`` (such as ``FleetUsage.usage_page``) pass through,
        metered as well; ``isinstance`` against a runtime-checkable protocol still sees
        exactly what the client offers."""
        if name == "inner":
            raise AttributeError(name)
        attr = getattr(self.inner, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self._call(name, lambda: attr(*args, **kwargs))

        return call


def metered(carriers: dict[str, Carrier]) -> dict[str, Carrier]:
    """Every client of ``carriers`` wrapped in a ``MeteredCarrier``."""
    return {name: MeteredCarrier(client) for name, client in carriers.items()}
