"""Telna webhooks through SNS: a verified message becomes one signal to the balance whose
line is the event's package, however often it comes; the subscription is confirmed."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowHandle

from services.enrolment import workflow_id
from simulators.telna import create_app as create_telna
from tests.api.conftest import (
    HELD_PACKAGE,
    STATUS_CHANGE,
    Api,
    SnsStandIn,
    hold_line,
    new_iccid,
    raw_delivery,
    telna_event,
)
from tests.api.helpers import offline_api, offline_settings
from tests.servers import serve

EVENTS = "/v1/carriers/telna/events"
ENDED_PACKAGE = "pkg-ended"


@pytest.fixture(scope="module")
def ended_line(api: Api) -> str:
    """A line of the open balance that has ended already (seq 0, before the held one)."""
    hold_line(api.settings.database_url, api.balance_iccid, ENDED_PACKAGE, "expired", seq=0)
    return ENDED_PACKAGE


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[SnsStandIn]:
    """An SNS look-alike on a host the API does not allow."""
    stand_in = SnsStandIn()
    with serve(stand_in.app()) as url:
        stand_in.url = url
        yield stand_in


async def _signals(api: Api) -> list[tuple[str, dict[str, Any]]]:
    """Name and payload of every signal in the seeded workflow's history."""
    handle: WorkflowHandle[object, object] = api.temporal.get_workflow_handle(
        workflow_id(api.balance_iccid)
    )
    found = []
    async for event in handle.fetch_history_events():
        if event.HasField("workflow_execution_signaled_event_attributes"):
            attrs = event.workflow_execution_signaled_event_attributes
            found.append((attrs.signal_name, json.loads(attrs.input.payloads[0].data)))
    return found


async def _post(api: Api, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    response = await api.http.post(EVENTS, content=body, headers=headers)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def test_a_wrapped_usage_alert_becomes_one_signal_to_the_line_of_its_package(
    api: Api,
) -> None:
    before = await _signals(api)
    body, headers = api.sns.wrapped(api.telna_event(used=500_001))
    answer = await _post(api, body, headers)
    assert answer == {"message_id": json.loads(body)["MessageId"], "outcome": "signalled"}
    [(name, report)] = (await _signals(api))[len(before) :]
    assert name == "usage_reported"
    assert (report["seq"], report["used_bytes"]) == (1, 500_001)
    assert report["reference"] == f"{api.balance_id}:1"


async def test_a_raw_delivery_with_its_credentials_is_signalled_too(api: Api) -> None:
    before = await _signals(api)
    event = api.telna_event(used=500_002)
    assert (await _post(api, event, raw_delivery(event)))["outcome"] == "signalled"
    assert [p["used_bytes"] for _, p in (await _signals(api))[len(before) :]] == [500_002]


async def test_a_duplicate_message_id_signals_once_wrapped_or_raw(api: Api) -> None:
    before = await _signals(api)
    event, message_id = api.telna_event(used=500_003), str(uuid.uuid4())
    body, headers = api.sns.wrapped(event, message_id)
    assert (await _post(api, body, headers))["outcome"] == "signalled"
    database = api.database()
    assert (await _post(api, body, headers))["outcome"] == "duplicate"
    # The same message raw: its id in the header, its event as the body.
    raw = json.loads(body)["Message"].encode()
    redelivered = raw_delivery(raw, message_id=message_id)
    assert (await _post(api, raw, redelivered))["outcome"] == "duplicate"
    assert len(await _signals(api)) == len(before) + 1
    assert api.database() == database


async def test_concurrent_duplicates_signal_once(api: Api) -> None:
    before = await _signals(api)
    body, headers = api.sns.wrapped(api.telna_event(used=500_004))
    responses = await asyncio.gather(
        *(api.http.post(EVENTS, content=body, headers=headers) for _ in range(8))
    )
    assert {r.status_code for r in responses} == {200}
    assert sorted(r.json()["outcome"] for r in responses) == ["duplicate"] * 7 + ["signalled"]
    assert len(await _signals(api)) == len(before) + 1


async def test_a_termination_of_the_active_line_tells_the_workflow_at_once(api: Api) -> None:
    before = await _signals(api)
    event = telna_event(api.balance_iccid, HELD_PACKAGE, name=STATUS_CHANGE, status="TERMINATED")
    assert (await _post(api, *api.sns.wrapped(event)))["outcome"] == "signalled"
    [(name, notice)] = (await _signals(api))[len(before) :]
    assert name == "audit"
    assert notice == {
        "kind": "ghost_line",
        "reference": f"{api.balance_id}:1",
        "reason": "terminated at Telna",
        "actor": "carrier",
        "used_up_at": None,
    }


async def test_a_termination_with_the_data_used_up_says_when(api: Api) -> None:
    """Telna ends a package whose data is used up (CARRIERS.md 2.6): the workflow learns
    it ran out then, and leaves it by usage, within the cost cap."""
    before = await _signals(api)
    event = telna_event(
        api.balance_iccid, HELD_PACKAGE, used=1_000_000, name=STATUS_CHANGE, status="TERMINATED"
    )
    assert (await _post(api, *api.sns.wrapped(event)))["outcome"] == "signalled"
    [(name, notice)] = (await _signals(api))[len(before) :]
    assert (name, notice["reason"]) == ("audit", "data used up at Telna")
    sent = json.loads(event)["eventTimestamp"] / 1000
    assert datetime.fromisoformat(notice["used_up_at"]).timestamp() == pytest.approx(sent)


async def test_a_termination_at_the_lines_own_end_is_its_expiry_and_no_news(api: Api) -> None:
    """A queued carrier's line expires as the next one starts: the workflow's own switch
    meets it at that moment, so the event adds nothing to its history."""
    before = await _signals(api)
    ends = datetime.now(UTC) - timedelta(milliseconds=500)
    hold_line(api.settings.database_url, api.balance_iccid, "pkg-expiring", seq=7, ends_at=ends)
    expired = telna_event(
        api.balance_iccid, "pkg-expiring", name=STATUS_CHANGE, status="TERMINATED"
    )
    assert (await _post(api, *api.sns.wrapped(expired)))["outcome"] == "ignored"
    assert await _signals(api) == before


async def test_a_termination_of_an_ended_line_adds_nothing_to_the_history(
    api: Api, ended_line: str
) -> None:
    before = await _signals(api)
    ended = telna_event(api.balance_iccid, ended_line, name=STATUS_CHANGE, status="TERMINATED")
    assert (await _post(api, *api.sns.wrapped(ended)))["outcome"] == "ignored"
    assert await _signals(api) == before


async def test_events_of_packages_we_do_not_hold_are_ignored(api: Api) -> None:
    before = await _signals(api)
    gone = "pkg-of-a-closed-balance"
    hold_line(api.settings.database_url, api.free_iccid, gone)  # no workflow for this eSIM
    events = [
        telna_event(api.balance_iccid, "pkg-someone-elses"),
        telna_event(api.free_iccid, gone),
        telna_event(api.balance_iccid, HELD_PACKAGE, name="HandleDownloadProgressInfo"),
    ]
    for event in events:
        assert (await _post(api, *api.sns.wrapped(event)))["outcome"] == "ignored"
    assert await _signals(api) == before


async def test_a_subscription_confirmation_visits_its_subscribe_url(api: Api) -> None:
    token = uuid.uuid4().hex
    body, headers = api.sns.confirmation(token)
    answer = await _post(api, body, headers)
    assert answer["outcome"] == "confirmed"
    assert token in api.sns.visits


async def test_a_subscribe_url_off_the_allow_list_is_never_visited(
    api: Api, elsewhere: SnsStandIn
) -> None:
    token = uuid.uuid4().hex
    envelope = json.loads(api.sns.confirmation(token)[0])
    envelope["SubscribeURL"] = f"{elsewhere.url}/_sim/sns/confirm?Token={token}"
    body = json.dumps(api.sns.signer.sign(envelope, api.sns.url)).encode()
    database = api.database()
    response = await api.http.post(EVENTS, content=body)
    assert response.status_code == 401, response.text
    assert response.json()["error"]["code"] == "bad_signature"
    assert elsewhere.visits == [] and token not in api.sns.visits
    assert api.database() == database


async def test_a_message_signed_off_the_allow_list_is_refused_unfetched(
    api: Api, elsewhere: SnsStandIn
) -> None:
    before = await _signals(api)
    body, headers = elsewhere.wrapped(api.telna_event(used=500_005))
    response = await api.http.post(EVENTS, content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == "SigningCertURL is not on an allowed SNS host"
    assert elsewhere.fetched == 0
    assert await _signals(api) == before


async def test_the_api_confirms_the_simulators_subscription_and_then_takes_its_events(
    tmp_path: Path,
) -> None:
    """No Temporal needed: the simulator's packages are none of ours, so each event is
    verified, answered 200 and ignored."""
    settings = offline_settings(tmp_path)
    with offline_api(settings) as api_url:
        app = create_telna("key", "", webhook_url=f"{api_url}{EVENTS}", seed=5)
        with serve(app) as sim_url:
            settings.telna.sns_hosts = sim_url  # read per request
            async with httpx.AsyncClient(base_url=sim_url, headers={"Authorization": "key"}) as s:
                iccid = new_iccid()
                await s.post("/_sim/esims", json={"iccids": [iccid]})
                body = {"sim": iccid, "package_template": "compressed-10s"}
                for _ in range(2):
                    package = (await s.post("/v2.1/pcr/packages", json=body)).json()
                    await s.post(f"/v2.1/pcr/packages/{package['id']}/terminate")
                deadline = time.monotonic() + 10
                while (await s.get("/_sim/config")).json()["webhooks"]["delivered"] < 3:
                    assert time.monotonic() < deadline, "the events did not arrive"
                    await asyncio.sleep(0.05)
            metrics = httpx.get(f"{api_url}/metrics").text
    assert 'esim_api_telna_events_total{outcome="confirmed"} 1.0' in metrics
    assert 'esim_api_telna_events_total{outcome="ignored"} 2.0' in metrics
