"""A boundary's confirmation gives way to a scheduled activity when the carrier is slow.

At a reset boundary the carrier starts the queued line itself and the workflow confirms
it with a local activity, inside its workflow task. A line the carrier has not started
yet (ordered after the boundary, it takes the carrier's activation latency) must not be
polled there: a local activity holds the worker's workflow task slot while it runs, and
in the 10,000 herd a few hundred such balances held every slot and stalled the rest.
"""

from __future__ import annotations

import time

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from models.payloads import BalanceStatus, Line, LineCommand, LineState
from tests.fakes import FakeCarrier, running_balance
from tests.workflows.record_histories import chain
from tests.workflows.test_balance_long_term import DAILY, _state
from workflows.steps import CONFIRM_ATTEMPTS

UTC_DAY = DAILY.model_copy(update={"id": "telna-daily-utc", "reset": "utc_midnight"})


class SlowToStart(FakeCarrier):
    """A carrier whose queued starts have not happened yet when the workflow first looks:
    a line not yet active is reported as not active to the local confirmation, and is
    activated when a scheduled activity asks."""

    def __init__(self) -> None:
        super().__init__()
        self.local_reads = 0
        self.local_seconds: list[float] = []

    @activity.defn(name="activate_line")
    async def activate_line(self, cmd: LineCommand) -> Line:
        line = self.lines[cmd.line.line_id or ""]
        if activity.info().is_local and line.state == LineState.scheduled:
            self.local_reads += 1
            self.local_seconds.append(time.monotonic())
            raise ApplicationError(f"line {line.line_id} is not active yet")
        return await super().activate_line(cmd)


async def test_a_line_the_carrier_has_not_started_is_confirmed_by_a_scheduled_activity(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    env = time_skipping_env
    carrier = SlowToStart()
    async with running_balance(env, carrier, _state(UTC_DAY, lines_total=2)) as handle:
        result = await handle.result()
    assert result.status == BalanceStatus.Completed
    assert result.rotations == 1
    assert [line.seq for line in result.archived] == [1, 2]
    # The local confirmation polled six times in about 4 s, then gave up.
    assert carrier.local_reads == CONFIRM_ATTEMPTS
    assert carrier.local_seconds[-1] - carrier.local_seconds[0] < 8
    # Line 2 was confirmed by a scheduled activity, after the local one's marker. The
    # boundary is in the second run (the first brought line 1 up and handed over).
    kinds = []
    runs = await chain(env.client, handle.id)
    for event in runs[1].events:
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            kinds.append("marker")
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            kinds.append(event.activity_task_scheduled_event_attributes.activity_type.name)
    assert kinds[0] == "order_line", kinds
    # The local read's marker (it gave up) comes right before the scheduled activation
    # that confirmed line 2.
    activations = [i for i, kind in enumerate(kinds) if kind == "activate_line"]
    assert len(activations) == 1, kinds
    assert kinds[activations[0] - 1] == "marker", kinds
