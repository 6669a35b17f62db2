"""Telna webhooks: one signal per event, however often and in whatever order it comes."""

from __future__ import annotations

import asyncio
import json
import time

from temporalio.client import WorkflowHandle

from services.enrolment import workflow_id
from tests.api.conftest import Api

EVENTS = "/v1/carriers/telna/events"


def _without_reference(body: bytes) -> bytes:
    event = json.loads(body)
    event["eventDetails"]["customer_ref"] = None  # a package someone else ordered
    return json.dumps(event).encode()


async def _signals(api: Api) -> list[int]:
    """used_bytes of every usage_reported signal in the seeded workflow's history."""
    handle: WorkflowHandle[object, object] = api.temporal.get_workflow_handle(
        workflow_id(api.balance_iccid)
    )
    used: list[int] = []
    async for event in handle.fetch_history_events():
        attrs = event.workflow_execution_signaled_event_attributes
        if event.HasField("workflow_execution_signaled_event_attributes"):
            assert attrs.signal_name == "usage_reported"
            payload = attrs.input.payloads[0].data
            used.append(int(payload.split(b'"used_bytes":')[1].split(b",")[0]))
    return used


async def test_a_usage_event_becomes_one_signal(api: Api) -> None:
    before = await _signals(api)
    body = api.telna_event(used=500_001)
    response = await api.http.post(EVENTS, content=body, headers=Api.signed(body))
    assert response.status_code == 202
    assert response.json()["outcome"] == "signalled"
    assert await _signals(api) == [*before, 500_001]


async def test_a_replay_within_the_tolerance_is_answered_but_not_signalled(api: Api) -> None:
    body = api.telna_event(used=500_002)
    headers = Api.signed(body)
    first = await api.http.post(EVENTS, content=body, headers=headers)
    assert first.json()["outcome"] == "signalled"
    signals, database = await _signals(api), api.database()
    replay = await api.http.post(EVENTS, content=body, headers=headers)
    assert replay.status_code == 202 and replay.json()["outcome"] == "duplicate"
    # The carrier retrying later signs the same event again, with a fresh timestamp.
    retry = await api.http.post(
        EVENTS, content=body, headers=Api.signed(body, at=int(time.time()) + 2)
    )
    assert retry.status_code == 202 and retry.json()["outcome"] == "duplicate"
    assert await _signals(api) == signals
    assert api.database() == database


async def test_concurrent_duplicates_signal_once(api: Api) -> None:
    before = await _signals(api)
    body = api.telna_event(used=500_003)
    headers = Api.signed(body)
    responses = await asyncio.gather(
        *(api.http.post(EVENTS, content=body, headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {202}
    assert sorted(r.json()["outcome"] for r in responses) == ["duplicate"] * 7 + ["signalled"]
    assert await _signals(api) == [*before, 500_003]


async def test_events_that_are_not_our_usage_are_ignored(api: Api) -> None:
    before = await _signals(api)
    bodies = [
        Api.telna_event_for(api.balance_iccid, api.balance_id, event="package.status"),
        _without_reference(api.telna_event()),
        Api.telna_event_for(api.free_iccid, "bal_gone"),  # no workflow for this eSIM
    ]
    for body in bodies:
        response = await api.http.post(EVENTS, content=body, headers=Api.signed(body))
        assert response.status_code == 202, response.text
        assert response.json()["outcome"] == "ignored"
    assert await _signals(api) == before
