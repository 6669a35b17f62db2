"""enrol → list → pause → resume → change product → cancel, all over HTTP, against the real
dev server, a worker and the Telna-like simulator; each step seen in the carrier's ledger."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from models.db import session_scope
from models.payloads import ChangePolicy, Policy
from models.tables import LineEvent
from services.enrolment import workflow_id
from tests.e2e.harness import OPERATOR_KEY, SERVICE_KEY, Rig, iccids, rig

OPERATOR = {"Authorization": f"Bearer {OPERATOR_KEY}"}
SERVICE = {"Authorization": f"Bearer {SERVICE_KEY}"}


async def _until(
    http: httpx.AsyncClient, path: str, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        body: dict[str, Any] = (await http.get(path, headers=SERVICE)).json()
        if check(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last {body}")
        await asyncio.sleep(0.25)


def _active(body: dict[str, Any]) -> dict[str, Any] | None:
    return next((line for line in body["lines"] if line["state"] == "active"), None)


async def _ledger(r: Rig, iccid: str) -> list[tuple[str, str, str]]:
    """The carrier's actions on the eSIM by package id (it may keep no reference)."""
    return [(e["action"], e["package_id"], e["product_id"]) for e in await r.ledger(iccid)]


async def test_operator_path_over_http_shows_at_the_carrier(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path) as r, httpx.AsyncClient(base_url=r.api_url) as http:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)

        # enrol, as a service would: register, then start (twice with one key: one balance)
        esim = await http.post(
            "/v1/esims", json={"iccid": iccid, "carrier": "telna"}, headers=SERVICE
        )
        assert esim.status_code == 201, esim.text
        start = {
            "iccid": iccid,
            "product_id": "telna-compressed-60s",
            "policy": {"lead_seconds": 10, "margin_seconds": 5},
        }
        keyed = SERVICE | {"Idempotency-Key": f"enrol-{iccid}"}
        created = await http.post("/v1/balances", json=start, headers=keyed)
        assert created.status_code == 201, created.text
        again = await http.post("/v1/balances", json=start, headers=keyed)
        assert again.json() == created.json()
        balance_id = created.json()["id"]
        path = f"/v1/balances/{balance_id}"
        first = _active(await _until(http, path, lambda b: _active(b) is not None, "line 1"))
        assert first is not None and first["id"] == f"{balance_id}:1"
        assert ("activate", first["carrier_line_id"], "compressed-60s") in await _ledger(r, iccid)
        assert [a for a, _, _ in await _ledger(r, iccid) if a == "order"] == ["order"]

        # list
        listed = (
            await http.get("/v1/balances", params={"carrier": "telna"}, headers=SERVICE)
        ).json()
        assert balance_id in [b["id"] for b in listed["data"]]
        shown = (await http.get(f"/v1/esims/{iccid}", headers=SERVICE)).json()
        assert shown["open_balance"]["id"] == balance_id

        # pause: the line ends at the carrier
        paused = await http.post(f"{path}/pause", json={"reason": "unpaid"}, headers=OPERATOR)
        assert paused.status_code == 202, paused.text
        await _until(http, path, lambda b: b["state"] == "Paused", "Paused")
        assert ("deactivate", first["carrier_line_id"], "compressed-60s") in await _ledger(r, iccid)
        listed = (
            await http.get("/v1/balances", params={"state": "Paused"}, headers=SERVICE)
        ).json()
        assert [b["id"] for b in listed["data"]] == [balance_id]

        # resume: a fresh line is bought and activated
        assert (await http.post(f"{path}/resume", headers=OPERATOR)).status_code == 202
        second = _active(
            await _until(http, path, lambda b: (_active(b) or {}).get("seq") == 2, "line 2")
        )
        assert second is not None
        assert ("activate", second["carrier_line_id"], "compressed-60s") in await _ledger(r, iccid)

        # change product (and policy), then rotate so the next line shows it at once
        patched = await http.patch(
            path,
            json={
                "product_id": "telna-compressed-30s",
                "policy": {"lead_seconds": 8, "margin_seconds": 4},
            },
            headers=OPERATOR,
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["next_product_id"] == "telna-compressed-30s"
        assert patched.json()["policy"]["lead_seconds"] == 8
        await _refuses_a_policy_that_would_loop(r, iccid)
        assert (await http.post(f"{path}/rotate", headers=OPERATOR)).status_code == 202
        third = _active(
            await _until(http, path, lambda b: (_active(b) or {}).get("seq") == 3, "line 3")
        )
        assert third is not None and third["product_id"] == "telna-compressed-30s"
        assert ("order", third["carrier_line_id"], "compressed-30s") in await _ledger(r, iccid)
        assert ("deactivate", second["carrier_line_id"], "compressed-60s") in await _ledger(
            r, iccid
        )

        # cancel: every line ends at the carrier, the balance closes
        assert (await http.post(f"{path}/cancel", headers=OPERATOR)).status_code == 202
        closed = await _until(http, path, lambda b: b["state"] == "Cancelled", "Cancelled")
        assert closed["closed_at"] is not None
        await r.client.get_workflow_handle(workflow_id(iccid)).result()
        entries = await r.ledger(iccid)
        activated = {e["package_id"] for e in entries if e["action"] == "activate"}
        ended = {
            e["package_id"] for e in entries if e["action"] in ("deactivate", "expire", "cancel")
        }
        assert activated <= ended, "a line is still active at the carrier after cancel"
        late = await http.post(f"{path}/pause", headers=OPERATOR)
        assert (late.status_code, late.json()["error"]["code"]) == (409, "balance_closed")
        await r.assert_database_matches_carrier(iccid)
        with session_scope(r.settings.database_url) as session:
            events = session.exec(select(LineEvent).where(LineEvent.balance_id == balance_id))
            by_operator = {e.kind for e in events if e.actor == "api:operator"}
        assert by_operator >= {
            "paused", "resumed", "product_changed", "policy_changed", "rotate_requested",
            "cancel_requested",
        }  # fmt: skip


async def _refuses_a_policy_that_would_loop(r: Rig, iccid: str) -> None:
    """The workflow's own validator, behind the API's check: margin over half a line."""
    handle = r.client.get_workflow_handle(workflow_id(iccid))
    with pytest.raises(WorkflowUpdateFailedError) as error:
        await handle.execute_update(
            "change_policy", ChangePolicy(policy=Policy(margin_seconds=20, lead_seconds=25))
        )
    assert "half the validity" in str(error.value.cause)
