"""The day's cost cap lifts at 00:00 UTC by itself, on the time-skipping server's virtual
clock, day after day: the workflow wakes for it, where it used to wait for its line's end
(a day pass used up in the morning left the eSIM throttled until the next morning)."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from temporalio.testing import WorkflowEnvironment

from models.payloads import (
    ActionRequest,
    BalanceState,
    BalanceStatus,
    Policy,
)
from tests.fakes import FakeCarrier, running_balance
from tests.workflows.capped_days import PASS, capped_days
from workflows.balance import BalanceWorkflow


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
        status = await capped_days(env, handle)
        kinds = [e.kind for record in fake.records for e in record.events]
        assert kinds.count("cap_reached") == 3 and kinds.count("cap_lifted") == 3, kinds
        if policy.max_spend_per_day is not None:
            # Every line bought is in the balance's spend: the fake sold each at 1.50.
            assert status.spend == {"USD": f"{1.5 * len(fake.orders):.2f}"}
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="test"))
        assert (await handle.result()).status == BalanceStatus.Cancelled
