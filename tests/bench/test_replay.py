"""bench.replay keeps working: both runners replay every recorded run (no timing asserted)."""

from __future__ import annotations

import pytest
from temporalio.client import WorkflowHistory

from bench import replay


async def test_both_runners_replay_every_recorded_run() -> None:
    result = await replay.measure(rounds=1, copies=1)
    assert result["runs"] == len(list(replay.HISTORIES.glob("*.json"))) > 0
    assert set(result["replays_per_second"]) == {"sandbox", "unsandboxed"}
    assert all(rate > 0 for rate in result["replays_per_second"].values())


async def test_a_run_that_does_not_replay_stops_the_bench() -> None:
    run = replay.histories()[0]
    events = list(run.events)
    scheduled = next(e for e in events if e.HasField("activity_task_scheduled_event_attributes"))
    # The run as if an older code had called another activity there.
    scheduled.activity_task_scheduled_event_attributes.activity_type.name = "retired_activity"
    with pytest.raises(RuntimeError, match="does not replay"):
        await replay.replays_per_second(False, [WorkflowHistory(run.workflow_id, events)], 1)
