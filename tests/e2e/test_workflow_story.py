"""The Temporal Web UI's story of a balance: the workflow's summary and details, its
current details in every run (continue-as-new drops the summary), and a summary on each
activity and timer."""

from __future__ import annotations

import re
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.converter import DataConverter
from temporalio.testing import WorkflowEnvironment

from services.enrolment import workflow_id
from tests.e2e.harness import iccids, rig
from tests.e2e.test_rotation import FAST

STEPS = (
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
)


async def step_summaries(handle: WorkflowHandle[object, object]) -> list[str]:
    """The summary of every activity and timer in the run's history ("" where missing)."""
    history = await handle.fetch_history()
    converter = DataConverter.default.payload_converter
    return [
        converter.from_payload(e.user_metadata.summary, str) if e.user_metadata.summary.data else ""
        for e in history.events
        if e.event_type in STEPS
    ]


async def test_every_run_tells_what_the_balance_is_and_does(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        handle = await r.enrol(iccid, "telna-compressed-10s", lines=5, policy=FAST)
        first_run = (await handle.describe()).run_id
        await r.wait_for(iccid, lambda s: s.rotations >= 1, 40, "a rotation")

        first = dev_env.client.get_workflow_handle(workflow_id(iccid), run_id=first_run)
        described = await first.describe()
        summary, details = await described.static_summary(), await described.static_details()
        current = dev_env.client.get_workflow_handle(workflow_id(iccid))
        metadata = await current.query("__temporal_workflow_metadata")
        status = await r.status(iccid)
        first_steps = await step_summaries(first)
        current_steps = await step_summaries(current)
        await r.cancel_and_wait(iccid)

    assert (await current.describe()).run_id != first_run  # continued as new
    assert summary == f"eSIM {iccid} on telna-compressed-10s, 5 lines"
    assert details is not None
    assert f"`{status.balance_id}`" in details
    assert "ordered 5 s and switched 3 s before it ends" in details
    assert metadata.current_details.startswith(f"**Active**: eSIM {iccid} on telna-compressed-10s")
    assert status.active is not None
    assert f"line {status.active.seq} active until" in metadata.current_details
    assert re.search(r" · rotations [1-9]\d* \(0 early by usage\)$", metadata.current_details)
    assert first_steps and all(first_steps), first_steps
    assert current_steps and all(current_steps), current_steps
    assert any(s.startswith("order line 1 (telna-compressed-10s) at telna") for s in first_steps)
    assert any(s.startswith("sleep until") for s in current_steps), current_steps
