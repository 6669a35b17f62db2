"""What a Balance shows outside its workflow: the database rows and ledger events, the
search attributes operators filter by in the Temporal Web UI, and the run's details."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from activities.store import StoreActivities
    from models import search
    from models.payloads import BalanceRecord, BalanceState, RecordChanges
    from workflows import timing
    from workflows.rotation import Changes

STORE_CALL = timedelta(seconds=30)
STORE_RETRY = RetryPolicy(maximum_interval=timedelta(seconds=30))


class Ledger:
    """Writes a balance's state where others read it. The status itself changes only in
    the rotation core: it is published with each write, and at the few moments it must
    be seen without one (Rotating, Throttled)."""

    def __init__(self) -> None:
        self._published: dict[str, Any] = {}

    async def record(
        self,
        s: BalanceState,
        changes: Changes | None = None,
        closed: bool = False,
    ) -> None:
        """Write the balance row, the changed lines, the pending events and the new ones."""
        s.revision += 1
        self.publish(s)
        pending, s.pending_events = s.pending_events, []
        events = [*pending, *(changes.events if changes else [])]
        kinds = ", ".join(e.kind for e in events)
        # A local activity: one marker event in history instead of a scheduled/started/
        # completed trio plus a workflow task; the write is idempotent, so a re-run after a
        # worker crash is harmless.
        await workflow.execute_local_activity_method(
            StoreActivities.record_changes,
            RecordChanges(
                balance_id=s.balance_id,
                iccid=s.iccid,
                carrier=s.carrier,
                balance=BalanceRecord.of(s, closed=closed),
                lines=changes.lines if changes else [],
                events=events,
            ),
            start_to_close_timeout=STORE_CALL,
            retry_policy=STORE_RETRY,
            summary=f"record {kinds or 'state'}",
        )

    def publish(self, s: BalanceState) -> None:
        """Upsert the search attributes that changed since the last upsert."""
        active = s.active
        wanted: list[SearchAttributeUpdate[Any]] = [
            search.BALANCE_STATE.value_set(s.status.value),
            search.ICCID.value_set(s.iccid),
            search.CARRIER.value_set(s.carrier),
            search.PRODUCT_ID.value_set(s.product.id),
        ]
        if active is not None:
            wanted.append(search.LINE_SEQ.value_set(active.seq))
            if active.ends_at is not None:
                wanted.append(search.LINE_ENDS_AT.value_set(active.ends_at))
        if not self._published:
            current = workflow.info().typed_search_attributes
            self._published = {pair.key.name: pair.value for pair in current}
        changed = [u for u in wanted if self._published.get(u.key.name) != u.value]
        if changed:
            workflow.upsert_search_attributes(changed)
            for update in changed:
                self._published[update.key.name] = update.value
        describe(s)


def describe(s: BalanceState) -> None:
    """The run's current details in the Temporal Web UI. The summary given at start is
    not carried over by continue-as-new, so each run says what it is doing itself (kept
    by the worker, answered to the UI's query: no history event)."""
    parts = [f"**{s.status.value}**: eSIM {s.iccid} on {s.product.id}"]
    if s.active is not None:
        ends = timing.ends_at(s.active)
        parts.append(f"line {s.active.seq} active until {ends:%H:%M:%SZ}")
    if s.scheduled is not None:
        parts.append(f"line {s.scheduled.seq} ordered")
    parts.append(f"rotations {s.rotations} ({s.early_rotations} early by usage)")
    if s.failing_reason:
        parts.append(f"failing: {s.failing_reason}")
    workflow.set_current_details(" · ".join(parts))
