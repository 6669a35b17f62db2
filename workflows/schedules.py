"""The fleet's own Temporal Schedules (usage polls, the audit): built one way, kept as
configured.

Each is an interval schedule that starts one workflow run at a time (overlap SKIP: a run
still going when the next is due makes that one skip) with a run time limit, so a stuck
run cannot hold its schedule for longer than that.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)


def every(
    seconds: float,
    run: Callable[..., Any],
    arg: Any,
    *,
    schedule_id: str,
    task_queue: str,
    run_limit: timedelta,
) -> Schedule:
    """A schedule that starts ``run(arg)`` (workflow id = ``schedule_id``) every
    ``seconds``, skipping a start while the previous run is still going."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            run, arg, id=schedule_id, task_queue=task_queue, execution_timeout=run_limit
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=seconds))]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_schedule(client: Client, schedule_id: str, schedule: Schedule) -> None:
    """Create the schedule, or replace an existing one's spec, action and policy with
    ``schedule`` (the whole schedule is ours: settings changed since are taken)."""
    try:
        await client.create_schedule(schedule_id, schedule)
    except ScheduleAlreadyRunningError:

        def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
            return ScheduleUpdate(schedule=schedule)

        await client.get_schedule_handle(schedule_id).update(replace)
