"""Helpers of the eSIM Go simulator's tests: a served simulator, ICCIDs, calls, waits."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from models.identifiers import make_iccid

API_KEY = "sim-esimgo-key"
V = "/v2.4"
DAILY = "esim_1GB_1D_GB_V2"
TEN_S = "esim_1MB_10S_SIM"
THIRTY_S = "esim_3MB_30S_SIM"
_serial = itertools.count(1)


def new_iccid() -> str:
    return make_iccid(f"8944{next(_serial) + 7_000_000:014d}")


async def enrolled(sim: httpx.AsyncClient) -> str:
    iccid = new_iccid()
    assert (await sim.post("/_sim/esims", json={"iccids": [iccid]})).json() == {"added": 1}
    return iccid


async def assign(sim: httpx.AsyncClient, iccid: str, item: str, quantity: int = 1) -> Any:
    body = {
        "type": "transaction",
        "assign": True,
        "order": [
            {"type": "bundle", "quantity": quantity, "item": item, "iccids": [iccid] * quantity}
        ],
    }
    response = await sim.post(f"{V}/orders", json=body)
    assert response.status_code == 200, response.text
    return response.json()


async def assignments(sim: httpx.AsyncClient, iccid: str, used: bool = True) -> list[Any]:
    """The eSIM's assignments, each with its bundle's name."""
    params = {"includeUsed": str(used).lower(), "limit": 200}
    response = await sim.get(f"{V}/esims/{iccid}/bundles", params=params)
    assert response.status_code == 200, response.text
    return [{**a, "name": b["name"]} for b in response.json()["bundles"] for a in b["assignments"]]


async def states(sim: httpx.AsyncClient, iccid: str) -> dict[str, str]:
    return {a["id"]: a["bundleState"] for a in await assignments(sim, iccid)}


async def ledger(sim: httpx.AsyncClient, iccid: str) -> list[tuple[str, str]]:
    entries = (await sim.get("/_sim/ledger", params={"iccid": iccid})).json()["entries"]
    return [(e["action"], e["package_id"]) for e in entries]


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)
