"""The day's cost cap lifts at 00:00 UTC by itself, on the time-skipping server's virtual
clock, day after day: the workflow wakes for it, where it used to wait for its line's end
(a day pass used up in the morning left the eSIM throttled until the next morning)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from models.payloads import (
    ActionRequest,
    BalanceState,
    BalanceStatus,
    BalanceStatusView,
    Policy,
    ProductSpec,
    UsageReport,
)
from tests.fakes import FakeCarrier, running_balance
from workflows.balance import BalanceWorkflow

# Two days of validity: a line started at midnight is not due to end by time that day.
PASS = ProductSpec(
    id="telna-2day-1gb",
    carrier="telna",
    carrier_product_id="2day-1gb",
    allowance_bytes=1_000_000_000,
    validity_seconds=2 * 86_400,
    price_cents=150,
    currency="USD",
)


async def _use_up(
    handle: WorkflowHandle[BalanceWorkflow, BalanceStatusView], now: datetime
) -> None:
    """The carrier reports the active line 96 % used: past the switch threshold."""
    status = await handle.query(BalanceWorkflow.status)
    assert status.active is not None
    used = int(PASS.allowance_bytes * 0.96)
    await handle.signal(
        BalanceWorkflow.usage_reported,
        UsageReport(seq=status.active.seq, used_bytes=used, observed_at=now),
    )


async def _settled(
    env: WorkflowEnvironment, handle: WorkflowHandle[BalanceWorkflow, BalanceStatusView]
) -> BalanceStatusView:
    """The status once the workflow has acted on what it was told (a few virtual seconds)."""
    await env.sleep(timedelta(seconds=5))
    return await handle.query(BalanceWorkflow.status)


@pytest.mark.parametrize(
    "policy",
    [Policy(max_spend_per_day=Decimal("3.00")), Policy(max_lines_per_day=2)],
    ids=["spend", "lines"],
)
async def test_the_cap_lifts_at_midnight_day_after_day(
    time_skipping_env: WorkflowEnvironment, policy: Policy
) -> None:
    env = time_skipping_env
    fake = FakeCarrier()
    state = BalanceState(
        balance_id=f"bal_{uuid.uuid4().hex[:12]}",
        iccid="8944000000000000019",
        carrier="telna",
        product=PASS,
        policy=policy,
    )
    async with running_balance(env, fake, state) as handle:
        status = await _settled(env, handle)
        assert status.active is not None
        for day in range(3):
            if day:  # the day's heavy use starts in the morning
                await env.sleep(timedelta(hours=6))
            now = await env.get_current_time()
            midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
            if midnight - now < timedelta(hours=2):  # room for the day's work
                await env.sleep(midnight - now + timedelta(hours=6))
                midnight += timedelta(days=1)
            # Heavy use: each line used up until the day's cap holds the eSIM back.
            for _ in range(4):
                await _use_up(handle, await env.get_current_time())
                status = await _settled(env, handle)
                if status.status == BalanceStatus.Throttled:
                    break
            assert status.status == BalanceStatus.Throttled and status.cap_reached, (day, status)
            # Still held back a minute before midnight...
            await env.sleep(midnight - await env.get_current_time() - timedelta(minutes=1))
            before = await handle.query(BalanceWorkflow.status)
            assert before.status == BalanceStatus.Throttled, (day, before)
            # ...and switched by usage onto a fresh line just after it.
            await env.sleep(timedelta(minutes=2))
            after = await handle.query(BalanceWorkflow.status)
            assert after.status == BalanceStatus.Active and not after.capped, (day, after)
            assert after.rotations == before.rotations + 1 and after.early_rotations >= 1
            assert after.active is not None and after.active.activated_at is not None
            assert after.active.activated_at >= midnight
            status = after
        kinds = [e.kind for record in fake.records for e in record.events]
        assert kinds.count("cap_reached") == 3 and kinds.count("cap_lifted") == 3, kinds
        if policy.max_spend_per_day is not None:
            # Every line bought is in the balance's spend: the fake sold each at 1.50.
            assert status.spend == {"USD": f"{1.5 * len(fake.orders):.2f}"}
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
        assert (await handle.result()).status == BalanceStatus.Cancelled
