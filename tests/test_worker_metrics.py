"""Worker metrics: carrier calls metered once for every client, rotations counted once,
the metrics port."""

from __future__ import annotations

import logging
import socket
from datetime import timedelta

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.store import StoreActivities
from carriers.base import CarrierLine, CarrierProduct, LineUsage
from carriers.errors import CarrierOutcomeUnknown, CarrierRejected, CarrierUnavailable
from carriers.metered import MeteredCarrier
from models.db import migrate
from models.payloads import LineState
from ports import free_port
from services import metrics
from tests.store.builders import changes, event, line, new_balance


def _value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


class FlakyCarrier:
    """Answers ``find_lines``; every other call fails its own way."""

    name = "flaky"
    in_doubt_seconds = 60.0

    def __init__(self) -> None:
        self.closed = False

    async def list_products(self) -> list[CarrierProduct]:
        raise CarrierUnavailable(self.name, "503", retry_after=1)

    async def order(self, *args: object, **kwargs: object) -> CarrierLine:
        raise CarrierRejected(self.name, "out of stock", "409")

    async def activate(self, line_id: str) -> CarrierLine:
        raise CarrierOutcomeUnknown(self.name, "timeout after sending")

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        return []

    async def open_lines(self, iccid: str, product_id: str) -> list[CarrierLine]:
        return []

    async def usage(self, line_id: str) -> LineUsage:
        raise CarrierUnavailable(self.name, "refused")

    async def usage_page(self, page: int) -> int:
        return page

    async def aclose(self) -> None:
        self.closed = True


async def test_every_carrier_call_is_timed_and_each_error_counted_by_kind() -> None:
    carrier = MeteredCarrier(FlakyCarrier())  # type: ignore[arg-type]
    calls = ["find_lines", "order", "activate", "list_products", "usage", "usage_page"]
    before = {
        op: _value("esim_carrier_call_seconds_count", carrier="flaky", operation=op) for op in calls
    }
    errors = {
        ("order", "rejected"),
        ("activate", "outcome_unknown"),
        ("list_products", "unavailable"),
        ("usage", "unavailable"),
    }
    errors_before = {
        e: _value("esim_carrier_call_errors_total", carrier="flaky", operation=e[0], kind=e[1])
        for e in errors
    }
    assert await carrier.find_lines("8944") == []
    with pytest.raises(CarrierRejected):
        await carrier.order("8944", "p", "bal:1")
    with pytest.raises(CarrierOutcomeUnknown):
        await carrier.activate("pkg")
    with pytest.raises(CarrierUnavailable):
        await carrier.list_products()
    with pytest.raises(CarrierUnavailable):
        await carrier.usage("pkg")
    assert await carrier.usage_page(3) == 3  # beyond the Carrier interface: passed through
    await carrier.aclose()
    assert carrier.inner.closed  # type: ignore[attr-defined]
    for op in calls:
        after = _value("esim_carrier_call_seconds_count", carrier="flaky", operation=op)
        assert after == before[op] + 1, op
    for e in errors:
        after = _value("esim_carrier_call_errors_total", carrier="flaky", operation=e[0], kind=e[1])
        assert after == errors_before[e] + 1, e
    assert (
        _value(
            "esim_carrier_call_errors_total",
            carrier="flaky",
            operation="find_lines",
            kind="unavailable",
        )
        == 0
    )
    assert not hasattr(carrier, "get_usage_page")


def test_a_rotation_is_counted_once_however_often_its_write_is_retried(database_url: str) -> None:
    migrate(database_url)
    balance_id, iccid = new_balance()
    old = line(balance_id, 1, LineState.active)
    assert old.ends_at is not None
    new = line(balance_id, 2, LineState.active).model_copy(
        update={"activated_at": old.ends_at - timedelta(seconds=3)}
    )
    ended = old.model_copy(
        update={"state": LineState.expired, "ended_at": old.ends_at - timedelta(seconds=1)}
    )
    activated = event(balance_id, 2, "activated").model_copy(update={"detail": {"reason": "time"}})
    batch = changes(balance_id, iccid, [ended, new], [activated, event(balance_id, 1, "expired")])
    count = _value("esim_rotations_total", carrier="telna", reason="time")
    # A histogram with negative buckets has no _sum: the 3 s lead shows in its bucket.
    leads = {
        le: _value("esim_rotation_lead_seconds_bucket", carrier="telna", le=le)
        for le in ("2.5", "5.0")
    }
    overlaps = _value("esim_rotation_overlap_seconds_sum", carrier="telna")
    gaps = _value("esim_rotation_gap_seconds_count", carrier="telna")
    store = StoreActivities(database_url)
    for _ in range(3):
        ActivityEnvironment().run(store.record_changes, batch)
    assert _value("esim_rotations_total", carrier="telna", reason="time") == count + 1
    assert _value("esim_rotation_lead_seconds_bucket", carrier="telna", le="2.5") == leads["2.5"]
    assert (
        _value("esim_rotation_lead_seconds_bucket", carrier="telna", le="5.0") == leads["5.0"] + 1
    )
    assert _value("esim_rotation_overlap_seconds_sum", carrier="telna") == pytest.approx(
        overlaps + 2
    )
    assert _value("esim_rotation_gap_seconds_count", carrier="telna") == gaps + 1
    first = changes(balance_id, iccid, [new], [event(balance_id, 3, "activated")])
    ActivityEnvironment().run(store.record_changes, first)  # no reason: a first line
    assert _value("esim_rotations_total", carrier="telna", reason="time") == count + 1


def test_a_metrics_port_in_use_is_one_log_line_not_a_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert metrics.serve(0) is None
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with caplog.at_level(logging.ERROR, logger="worker.metrics"):
            assert metrics.serve(port) is None
    assert [r.getMessage() for r in caplog.records if "not served" in r.getMessage()] == [
        f"worker metrics not served: 127.0.0.1:{port}: Address already in use "
        "(set WORKER_METRICS_PORT to a free port, or 0 to turn them off)"
    ]


def test_the_worker_serves_its_metrics_on_the_address_it_is_given() -> None:
    """``WORKER_METRICS_HOST``: a Prometheus in another container needs more than
    loopback; here a second loopback address stands in for it."""
    port = free_port()
    stop = metrics.serve(port, host="127.0.0.2")
    assert stop is not None
    try:
        text = httpx.get(f"http://127.0.0.2:{port}/metrics").text
        assert "esim_worker_balances" in text
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/metrics")
    finally:
        stop()
