"""Days of heavy use under a cost cap, on the time-skipping server's virtual clock: each
day the balance uses line after line up until the day's cap holds it on a spent line
(Throttled), and at 00:00 UTC the cap lifts and it switches by usage onto a fresh line.
Run by tests/workflows/test_cap_lifts.py, and recorded for the replay test by
tests/workflows/record_histories.py (``cap-lifts``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from models.payloads import BalanceStatus, BalanceStatusView, ProductSpec, UsageReport
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


async def capped_days(
    env: WorkflowEnvironment,
    handle: WorkflowHandle[BalanceWorkflow, BalanceStatusView],
    days: int = 3,
) -> BalanceStatusView:
    """``days`` days of heavy use, each capped and lifted at midnight; the last status."""
    status = await _settled(env, handle)
    assert status.active is not None
    for day in range(days):
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
    return status
