"""The eSIM Go-like simulator's revokes over real HTTP: oldest unused first, refunds only
when enabled, an active assignment ended at once, and the returns process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from simulators.esimgo import create_app
from tests.servers import serve
from tests.simulators.esimgo_calls import (
    API_KEY,
    DAILY,
    V,
    assign,
    enrolled,
    ledger,
    states,
    wait_for,
)


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    app = create_app(API_KEY, seed=9, activation_latency=(0.1, 0.1), rate_limit_tokens=None)
    with serve(app) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, headers={"X-API-Key": API_KEY}) as client:
        yield client
        await client.post("/_sim/esimgo", json={"refunds_enabled": False, "balance": 10_000})


async def started(sim: httpx.AsyncClient, iccid: str, quantity: int) -> list[str]:
    """Orders ``quantity`` daily bundles onto an installed eSIM; waits for the first to
    start; returns the assignment ids in order."""
    await sim.post("/_sim/esimgo/installed", json={"iccids": [iccid]})
    await assign(sim, iccid, DAILY, quantity)
    ids = [pid for action, pid in await ledger(sim, iccid) if action == "order"]

    async def first_active() -> bool:
        return (await states(sim, iccid))[ids[0]] == "active"

    await wait_for(first_active)
    return ids


async def test_revoke_by_name_takes_the_oldest_unused_and_validate_changes_nothing(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    active, second, third = await started(sim, iccid, 3)
    path = f"{V}/esims/{iccid}/bundles/{DAILY}"
    checked = await sim.delete(path, params={"type": "validate"})
    assert checked.status_code == 200 and set(checked.json()) == {"status"}
    assert (await states(sim, iccid))[second] == "queued"
    done = await sim.delete(path, params={"type": "transaction"})
    assert done.json() == {"status": "Revoked"}  # refunds are off by default
    found = await states(sim, iccid)
    assert (found[active], found[second], found[third]) == ("active", "revoked", "queued")
    assert ("cancel", second) in await ledger(sim, iccid)
    assert (await sim.get("/_sim/esimgo")).json()["inventory"].get(DAILY) is None
    await sim.delete(path)
    again = await sim.delete(path)  # nothing unused is left
    assert again.status_code == 400 and "message" in again.json()


async def test_an_unused_bundle_is_refunded_only_with_refunds_enabled(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    active, *_ = await started(sim, iccid, 3)
    await sim.post("/_sim/esimgo", json={"refunds_enabled": True})
    balance = (await sim.get("/_sim/esimgo")).json()["balance"]
    path = f"{V}/esims/{iccid}/bundles/{DAILY}"
    to_balance = await sim.delete(path, params={"refundToBalance": "true"})
    assert to_balance.json() == {"status": "Revoked and refunded to balance"}
    assert (await sim.get("/_sim/esimgo")).json()["balance"] == round(balance + 1.5, 2)
    to_inventory = await sim.delete(path)
    assert to_inventory.json() == {"status": "Revoked and returned to inventory"}
    assert (await sim.get("/_sim/esimgo")).json()["inventory"][DAILY] >= 1
    used = await sim.delete(f"{path}/assignments/{active}", params={"refundToBalance": "true"})
    assert used.json() == {"status": "Revoked"}  # a started bundle is never refunded


async def test_revoking_the_active_assignment_ends_it_and_the_next_starts(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    active, queued = await started(sim, iccid, 2)
    path = f"{V}/esims/{iccid}/bundles/{DAILY}/assignments/{active}"
    assert (await sim.delete(path)).json() == {"status": "Revoked"}
    found = await states(sim, iccid)
    assert found == {active: "revoked", queued: "active"}
    assert ("deactivate", active) in await ledger(sim, iccid)
    revoked = (await sim.get(f"{V}/esims/{iccid}/bundles", params={"includeUsed": "true"})).json()
    view = {a["id"]: a for b in revoked["bundles"] for a in b["assignments"]}
    assert view[active]["endTime"] >= view[active]["startTime"]
    ended = await sim.delete(path)
    assert ended.status_code == 400
    wrong = await sim.delete(f"{V}/esims/{iccid}/bundles/{DAILY}/assignments/123")
    assert wrong.status_code == 400
    timeline = (await sim.get(f"/_sim/timeline/{iccid}")).json()["intervals"]
    assert [i["state"] for i in timeline] == ["high_speed"]


async def test_revoking_the_last_bundle_of_an_uninstalled_esim_removes_it(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await assign(sim, iccid, DAILY)
    assert (await sim.delete(f"{V}/esims/{iccid}/bundles/{DAILY}")).status_code == 200
    gone = await sim.get(f"{V}/esims/{iccid}/bundles")
    assert gone.status_code == 403 and "not accessible" in gone.json()["message"]
    refused = await sim.post(
        f"{V}/orders",
        json={
            "type": "validate",
            "assign": True,
            "order": [{"type": "bundle", "quantity": 1, "item": DAILY, "iccids": [iccid]}],
        },
    )
    assert refused.status_code == 403
    assert iccid in (await sim.get("/_sim/esimgo")).json()["removed"]


async def test_an_esim_that_carried_data_or_is_marked_installed_stays(
    sim: httpx.AsyncClient,
) -> None:
    marked = await enrolled(sim)
    await sim.post("/_sim/esimgo/installed", json={"iccids": [marked]})
    await assign(sim, marked, DAILY)
    await sim.delete(f"{V}/esims/{marked}/bundles/{DAILY}")
    assert (await sim.get(f"{V}/esims/{marked}/bundles")).status_code == 200

    used = await enrolled(sim)
    await sim.post("/_sim/traffic", json={"iccid": used, "bytes_per_second": 100_000})
    await assign(sim, used, DAILY)
    [pid] = [p for action, p in await ledger(sim, used) if action == "order"]

    async def active() -> bool:
        return (await states(sim, used)) == {pid: "active"}

    await wait_for(active)
    await sim.delete(f"{V}/esims/{used}/bundles/{DAILY}/assignments/{pid}")
    assert (await sim.get(f"{V}/esims/{used}/bundles")).status_code == 200


async def test_an_esim_on_no_device_keeps_its_bundles_queued_until_installed(
    sim: httpx.AsyncClient,
) -> None:
    """Marked not installed, an eSIM never attaches: its bundle stays queued, and its last
    bundle's revoke would take the eSIM away. Installed, the bundle starts, and an eSIM
    that has started a bundle counts as installed from then on."""
    iccid = await enrolled(sim)
    await sim.post("/_sim/esimgo/installed", json={"iccids": [iccid], "installed": False})
    await assign(sim, iccid, DAILY)
    [pid] = [p for action, p in await ledger(sim, iccid) if action == "order"]
    await wait_for(lambda: _state_is(sim, iccid, pid, "queued"))
    await asyncio.sleep(0.5)  # processing (0.1 s) long over
    assert (await states(sim, iccid)) == {pid: "queued"}
    await sim.post("/_sim/esimgo/installed", json={"iccids": [iccid], "installed": True})
    await wait_for(lambda: _state_is(sim, iccid, pid, "active"))
    await sim.post("/_sim/esimgo/installed", json={"iccids": [iccid], "installed": False})
    await sim.delete(f"{V}/esims/{iccid}/bundles/{DAILY}/assignments/{pid}")
    assert (await sim.get(f"{V}/esims/{iccid}/bundles")).status_code == 200


async def _state_is(sim: httpx.AsyncClient, iccid: str, pid: str, state: str) -> bool:
    return (await states(sim, iccid)).get(pid) == state
