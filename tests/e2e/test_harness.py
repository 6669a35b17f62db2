"""The e2e harness's own rules: what a timed-out wait tells of a balance's runs."""

from __future__ import annotations

from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent, WorkflowTaskFailedEventAttributes

from tests.e2e.harness import event_text


def test_a_failed_workflow_task_says_its_cause_and_message() -> None:
    failed = HistoryEvent(
        event_type=EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED,
        workflow_task_failed_event_attributes=WorkflowTaskFailedEventAttributes(
            cause=WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,
            failure=Failure(message="UnhandledCommand"),
        ),
    )
    assert event_text(failed) == "WORKFLOW_TASK_FAILED(UNHANDLED_COMMAND: 'UnhandledCommand')"


def test_other_events_are_named_by_their_type_alone() -> None:
    signalled = HistoryEvent(event_type=EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)
    assert event_text(signalled) == "WORKFLOW_EXECUTION_SIGNALED"
