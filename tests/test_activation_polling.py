"""An activation the carrier has not yet confirmed is polled inside one attempt (with
heartbeats) when the command asks for it, and is a single read otherwise."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities import carrier as carrier_activities
from activities.carrier import ACTIVATION_PENDING, CarrierActivities
from carriers.base import CarrierLine
from carriers.errors import CarrierUnavailable
from models.payloads import LineState
from tests.test_carrier_heartbeats import command


class SlowActivation:
    """Confirms the line on the ``pending + 1``-th activation request; counts them."""

    def __init__(self, pending: int, fail_on: int | None = None) -> None:
        self.pending, self.fail_on, self.reads = pending, fail_on, 0

    async def activate(self, line_id: str) -> CarrierLine:
        self.reads += 1
        if self.reads == self.fail_on:
            raise CarrierUnavailable("telna", "503 from the carrier")
        now = datetime.now(UTC)
        active = self.reads > self.pending
        return CarrierLine(
            line_id=line_id,
            iccid="8944000000000000001",
            carrier_product_id="compressed-30s",
            reference="b:1",
            status="active" if active else "scheduled",
            ordered_at=now - timedelta(seconds=5),
            activated_at=now if active else None,
            ends_at=now + timedelta(seconds=30) if active else None,
            allowance_bytes=3_000_000,
        )


def environment(beats: list[Any], is_local: bool = False) -> ActivityEnvironment:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, heartbeat_timeout=timedelta(seconds=5), is_local=is_local
    )
    env.on_heartbeat = lambda *details: beats.append(details)
    return env


@pytest.fixture(autouse=True)
def fast(monkeypatch: Any) -> None:
    monkeypatch.setattr(carrier_activities, "HEARTBEAT_EVERY", 0.05)
    monkeypatch.setattr(carrier_activities, "POLL_FIRST", 0.02)


async def test_polls_within_the_attempt_until_active_and_heartbeats() -> None:
    carrier, beats = SlowActivation(pending=6), []
    activities = CarrierActivities({"telna": carrier})  # type: ignore[dict-item]
    line = await environment(beats).run(activities.activate_line, command(0.1))
    assert line.state == LineState.active and line.activated_at is not None
    assert carrier.reads == 7
    assert beats, "a polling attempt must heartbeat"


async def test_without_polling_a_pending_activation_is_one_read_that_fails() -> None:
    for poll, is_local in ((0.0, False), (0.1, True)):
        carrier = SlowActivation(pending=3)
        activities = CarrierActivities({"telna": carrier})  # type: ignore[dict-item]
        with pytest.raises(ApplicationError) as raised:
            await environment([], is_local).run(activities.activate_line, command(poll))
        assert raised.value.type == ACTIVATION_PENDING
        assert carrier.reads == 1


async def test_a_carrier_error_while_polling_ends_the_attempt_for_the_retry_policy() -> None:
    carrier = SlowActivation(pending=5, fail_on=3)
    activities = CarrierActivities({"telna": carrier})  # type: ignore[dict-item]
    with pytest.raises(ApplicationError) as raised:
        await environment([]).run(activities.activate_line, command(0.1))
    assert raised.value.type == "CarrierUnavailable" and not raised.value.non_retryable
    assert carrier.reads == 3
