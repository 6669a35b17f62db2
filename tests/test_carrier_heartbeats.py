"""Carrier activities heartbeat while a slow call runs, so a dead worker is noticed fast."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities import carrier as carrier_activities
from activities.carrier import CarrierActivities
from carriers.base import CarrierLine
from models.payloads import Line, LineCommand, LineState


class SlowCarrier:
    """Answers ``deactivate`` after ``seconds``; nothing else is called."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def deactivate(self, line_id: str) -> CarrierLine:
        await asyncio.sleep(self.seconds)
        now = datetime.now(UTC)
        return CarrierLine(
            line_id=line_id,
            iccid="8944000000000000001",
            carrier_product_id="compressed-30s",
            reference="b:1",
            status="ended",
            ordered_at=now - timedelta(seconds=10),
            activated_at=now - timedelta(seconds=10),
            ended_at=now,
            allowance_bytes=3_000_000,
        )


def command() -> LineCommand:
    line = Line(
        seq=1,
        reference="b:1",
        product_id="telna-compressed-30s",
        carrier_product_id="compressed-30s",
        allowance_bytes=3_000_000,
        validity_seconds=30,
        line_id="pkg-1",
        state=LineState.active,
    )
    return LineCommand(carrier="telna", iccid="8944000000000000001", line=line)


async def run(seconds: float, heartbeat_timeout: timedelta | None) -> list[Any]:
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, heartbeat_timeout=heartbeat_timeout)
    beats: list[Any] = []
    env.on_heartbeat = lambda *details: beats.append(details)
    activities = CarrierActivities({"telna": SlowCarrier(seconds)})  # type: ignore[dict-item]
    ended = await env.run(activities.deactivate_line, command())
    assert ended.state == LineState.cancelled
    return beats


async def test_a_slow_call_heartbeats_every_second(monkeypatch: Any) -> None:
    monkeypatch.setattr(carrier_activities, "HEARTBEAT_EVERY", 0.1)
    assert len(await run(0.55, timedelta(seconds=5))) == 5


async def test_a_fast_call_or_no_heartbeat_timeout_sends_none(monkeypatch: Any) -> None:
    monkeypatch.setattr(carrier_activities, "HEARTBEAT_EVERY", 0.1)
    assert await run(0.05, timedelta(seconds=5)) == []
    assert await run(0.35, None) == []
