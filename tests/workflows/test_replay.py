"""Recorded BalanceWorkflow histories replay against the code of today.

A workflow running when a new worker is deployed is replayed by that worker: if the new
code would order another command (activity, timer, search attribute upsert...) where
the history has the old one, the run stops with a non-determinism error. These tests
replay real runs (tests/workflows/record_histories.py; how and when to re-record is in
its docstring) with the worker's own sandbox runner and data converter.

Four generations are kept: ``histories/`` recorded with eSIM Go's own scenarios, before
``CAP_LIFTS_AT_MIDNIGHT`` and ``CAP_RECORDED_AT_ONCE``;
``histories/recorded-2026-11-28/``, recorded before ``HAND_OVER_WHEN_LONG``,
``ROTATE_WITHIN_CAP``, ``QUEUED_BY_CARRIER`` and ``ACTIVATION_YIELDS``;
``histories/handed-over-at-switch/``, recorded when a run handed over at its switch
rather than when its next order fell due (``HAND_OVER_AT_ORDER``); and
``histories/bring-up-kept-its-run/``, recorded before a run handed over once its
bring-up was done (``HAND_OVER_AFTER_BRING_UP``). A run of any kind in flight at the
upgrade still replays. Beside them, ``histories/virtual-clock/`` holds what a dev
server's clock cannot reach, recorded on the time-skipping server: three days under a
spend cap, each lifted at 00:00 UTC (``cap-lifts``, every patch taken).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowHistory

from tests.replay import replayer
from tests.workflows.record_histories import HISTORIES, ON_VIRTUAL_CLOCK, SCENARIOS, VIRTUAL_CLOCK
from workflows.balance import (
    ACTIVATION_YIELDS,
    CAP_LIFTS_AT_MIDNIGHT,
    CAP_RECORDED_AT_ONCE,
    QUEUED_BY_CARRIER,
    BalanceWorkflow,
)

# Scenarios recorded before eSIM Go was a carrier.
BEFORE_ESIMGO = set(SCENARIOS) - {"rotation-esimgo", "used-up-esimgo", "never-installed-esimgo"}
# folder -> the scenarios recorded in it
RECORDED = {
    HISTORIES: set(SCENARIOS),
    HISTORIES / "recorded-2026-11-28": BEFORE_ESIMGO,
    HISTORIES / "handed-over-at-switch": BEFORE_ESIMGO,
    HISTORIES / "bring-up-kept-its-run": BEFORE_ESIMGO,
    VIRTUAL_CLOCK: set(ON_VIRTUAL_CLOCK),
}
GENERATIONS = list(RECORDED)
FILES = [path for folder in GENERATIONS for path in sorted(folder.glob("*.json"))]


def _history(path: Path) -> WorkflowHistory:
    return WorkflowHistory.from_json(f"replay-{path.stem}", path.read_text())


def _events(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, attributes) of each event in a recorded history."""
    for event in json.loads(path.read_text())["events"]:
        kind = event["eventType"].removeprefix("EVENT_TYPE_")
        attributes: dict[str, Any] = next(
            (v for k, v in event.items() if k.endswith("Attributes")), {}
        )
        yield kind, attributes


def _scenario(path: Path) -> str:
    return path.stem.rsplit("-", 1)[0]


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.stem}" for p in FILES])
async def test_recorded_run_replays(path: Path) -> None:
    await replayer().replay_workflow(_history(path))


async def test_a_changed_workflow_fails_replay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Proof the check can fail: a workflow that waits a moment before each order (a new
    timer ahead of the order activity) is not the workflow that wrote the history. The
    worker's runner passes workflows/ through the sandbox, so the patched class is the
    one replayed."""
    order_next = BalanceWorkflow._order_next

    async def wait_then_order(self: BalanceWorkflow) -> bool:
        await workflow.sleep(timedelta(seconds=1))
        return await order_next(self)

    monkeypatch.setattr(BalanceWorkflow, "_order_next", wait_then_order)
    history = _history(HISTORIES / "rotation-telna-1.json")
    with pytest.raises(workflow.NondeterminismError):
        await replayer().replay_workflow(history)


@pytest.mark.parametrize("folder", GENERATIONS, ids=[f.name for f in GENERATIONS])
def test_every_scenario_is_recorded_with_what_it_shows(folder: Path) -> None:
    """A deleted or re-recorded file that no longer shows its signal, update, status or
    continue-as-new is noticed."""
    files = sorted(folder.glob("*.json"))
    recorded = {_scenario(path) for path in files}
    assert recorded == RECORDED[folder], recorded ^ RECORDED[folder]
    signals: dict[str, set[str]] = {}
    updates: dict[str, set[str]] = {}
    states: dict[str, set[str]] = {}
    runs: dict[str, int] = {}
    for path in files:
        name = _scenario(path)
        runs[name] = runs.get(name, 0) + 1
        for kind, attributes in _events(path):
            if kind == "WORKFLOW_EXECUTION_SIGNALED":
                signals.setdefault(name, set()).add(attributes["signalName"])
            elif kind == "WORKFLOW_EXECUTION_UPDATE_ACCEPTED":
                update = attributes["acceptedRequest"]["input"]["name"]
                updates.setdefault(name, set()).add(update)
            elif kind == "UPSERT_WORKFLOW_SEARCH_ATTRIBUTES":
                fields = attributes["searchAttributes"]["indexedFields"]
                if "BalanceState" in fields:
                    value = json.loads(base64.b64decode(fields["BalanceState"]["data"]))
                    states.setdefault(name, set()).add(value)
    markers: dict[str, set[str]] = {}
    for path in files:
        for kind, attributes in _events(path):
            if kind == "MARKER_RECORDED" and attributes.get("markerName") == "core_patch":
                patch = json.loads(
                    base64.b64decode(attributes["details"]["patch-data"]["payloads"][0]["data"])
                )
                markers.setdefault(_scenario(path), set()).add(patch["id"])
    for name in recorded:
        assert "cancel" in signals.get(name, set()), name
    for name, n in runs.items():
        _assert_whole_chain([folder / f"{name}-{i}.json" for i in range(1, n + 1)])
    if folder == VIRTUAL_CLOCK:
        # Capped and lifted on three days: a run for each line, the midnight's included.
        assert {"Throttled", "Active"} <= states["cap-lifts"]
        assert "usage_reported" in signals["cap-lifts"] and runs["cap-lifts"] >= 6
        assert {CAP_LIFTS_AT_MIDNIGHT, CAP_RECORDED_AT_ONCE} <= markers["cap-lifts"]
        return
    assert {"pause", "resume"} <= signals["pause-resume"]
    assert "rotate_now" in signals["rotate-now"]
    assert "usage_reported" in signals["usage-rotation"]
    assert updates["change-product"] == {"change_product"}
    assert updates["change-policy"] == {"change_policy"}
    assert "Failing" in states["outage"]
    assert "Throttled" in states["cost-cap"]
    # Two rotations by time: the first run and two continue-as-new runs.
    assert runs["rotation-telna"] >= 3 and runs["rotation-webbing"] >= 3
    if folder == HISTORIES:
        assert runs["rotation-esimgo"] >= 3
        assert {"pause", "resume"} <= signals["never-installed-esimgo"]
        # Today's runs take the patched branches of eSIM Go's changes.
        for name in ("rotation-esimgo", "used-up-esimgo", "never-installed-esimgo"):
            assert {QUEUED_BY_CARRIER, ACTIVATION_YIELDS} <= markers.get(name, set()), name


def _assert_whole_chain(paths: list[Path]) -> None:
    """Each run continues as the next file's run; the last one completes (the cancel)."""
    next_run: str | None = None
    for path in paths:
        assert path.exists(), f"{path.name} is missing from its chain"
        events = list(_events(path))
        kind, started = events[0]
        assert kind == "WORKFLOW_EXECUTION_STARTED", path.name
        if next_run is not None:
            assert started["originalExecutionRunId"] == next_run, path.name
        kind, last = events[-1]
        if path is paths[-1]:
            assert kind == "WORKFLOW_EXECUTION_COMPLETED", f"{path.name} is not the last run"
        else:
            assert kind == "WORKFLOW_EXECUTION_CONTINUED_AS_NEW", path.name
            next_run = last["newExecutionRunId"]
