"""Idempotency-Key on POST /v1/balances: one balance and one workflow per key."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlmodel import select

from models.db import session_scope
from models.tables import Balance, Esim
from services.enrolment import workflow_id
from tests.api.conftest import Api, new_iccid


async def _registered(api: Api) -> str:
    iccid = new_iccid()
    response = await api.http.post(
        "/v1/esims", json={"iccid": iccid, "carrier": "telna"}, headers=Api.auth("service")
    )
    assert response.status_code == 201, response.text
    return iccid


def _balances(api: Api, iccid: str) -> list[Balance]:
    with session_scope(api.settings.database_url) as session:
        return list(session.exec(select(Balance).where(Balance.iccid == iccid)))


async def _runs(api: Api, iccid: str) -> int:
    count = await api.temporal.count_workflows(f'WorkflowId = "{workflow_id(iccid)}"')
    return count.count


async def _post(api: Api, body: dict[str, Any], key: str | None) -> Any:
    headers = Api.auth("service") | ({"Idempotency-Key": key} if key else {})
    return await api.http.post("/v1/balances", json=body, headers=headers)


async def test_same_key_and_body_give_the_same_answer_and_one_workflow(api: Api) -> None:
    iccid = await _registered(api)
    body = {"iccid": iccid, "product_id": "telna-daily-1gb", "lines": 3}
    first = await _post(api, body, "key-1")
    assert first.status_code == 201, first.text
    again = await _post(api, body, "key-1")
    assert (again.status_code, again.json()) == (201, first.json())
    assert again.headers["idempotent-replayed"] == "true"
    assert len(_balances(api, iccid)) == 1
    await asyncio.sleep(1)  # visibility
    assert await _runs(api, iccid) == 1
    # Without a key, enrolment is still idempotent per ICCID: the open balance, 200.
    plain = await _post(api, body, None)
    assert plain.status_code == 200 and plain.json()["id"] == first.json()["id"]
    await api.temporal.get_workflow_handle(workflow_id(iccid)).terminate("test over")


async def test_same_key_with_another_body_is_a_conflict(api: Api) -> None:
    iccid = await _registered(api)
    body = {"iccid": iccid, "product_id": "telna-daily-1gb"}
    assert (await _post(api, body, "key-2")).status_code == 201
    database = api.database()
    other = await _post(api, body | {"lines": 5}, "key-2")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_key_reused"
    assert api.database() == database
    await api.temporal.get_workflow_handle(workflow_id(iccid)).terminate("test over")


async def test_a_refused_request_does_not_use_up_its_key(api: Api) -> None:
    iccid = await _registered(api)
    refused = await _post(api, {"iccid": iccid, "product_id": "telna-nope"}, "key-3")
    assert refused.status_code == 422
    ok = await _post(api, {"iccid": iccid, "product_id": "telna-daily-1gb"}, "key-3")
    assert ok.status_code == 201, ok.text
    await api.temporal.get_workflow_handle(workflow_id(iccid)).terminate("test over")


async def test_concurrent_requests_with_one_key_start_one_balance(api: Api) -> None:
    iccid = await _registered(api)
    body = {"iccid": iccid, "product_id": "telna-daily-1gb"}
    responses = await asyncio.gather(*(_post(api, body, "key-4") for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert set(statuses) <= {201, 409} and 201 in statuses, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses if r.status_code == 201}) == 1
    assert all(
        r.json()["error"]["code"] == "idempotency_key_in_use"
        for r in responses
        if r.status_code == 409
    )
    assert len(_balances(api, iccid)) == 1
    with session_scope(api.settings.database_url) as session:
        assert session.get(Esim, iccid) is not None
    await api.temporal.get_workflow_handle(workflow_id(iccid)).terminate("test over")


async def test_a_key_belongs_to_the_api_key_that_sent_it(api: Api) -> None:
    mine, theirs = await _registered(api), await _registered(api)
    body = {"iccid": mine, "product_id": "telna-daily-1gb"}
    first = await _post(api, body, "shared-key")
    assert first.status_code == 201, first.text
    # Another caller's request with the same key is its own: neither refused as a reuse
    # of the key nor answered with the first caller's balance.
    other = {"iccid": theirs, "product_id": "telna-daily-1gb"}
    answer = await api.http.post(
        "/v1/balances", json=other, headers=Api.auth("operator") | {"Idempotency-Key": "shared-key"}
    )
    assert answer.status_code == 201, answer.text
    assert answer.json()["iccid"] == theirs and "idempotent-replayed" not in answer.headers
    same = await api.http.post(
        "/v1/balances", json=body, headers=Api.auth("operator") | {"Idempotency-Key": "shared-key"}
    )
    assert same.status_code == 409 and same.json()["error"]["code"] == "idempotency_key_reused"
    again = await _post(api, body, "shared-key")
    assert again.headers["idempotent-replayed"] == "true" and again.json() == first.json()
    for iccid in (mine, theirs):
        await api.temporal.get_workflow_handle(workflow_id(iccid)).terminate("test over")
