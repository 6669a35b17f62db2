"""The eSIM Go-like simulator's edges over real HTTP: signed usage callbacks, the token
rate limit, injected faults, state across a restart, the command line."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from simulators.esimgo import SimulatorConfigError, create_app, main
from tests.servers import serve
from tests.simulators.esimgo_calls import (
    API_KEY,
    DAILY,
    TEN_S,
    V,
    assign,
    enrolled,
    ledger,
    new_iccid,
    wait_for,
)


class Receiver:
    """The product's side of the callback: keeps every delivery's headers and raw body."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/events")(self.receive)

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            self.deliveries.append(({k.lower(): v for k, v in request.headers.items()}, body))
        return Response(status_code=200)

    def of(self, iccid: str) -> list[tuple[dict[str, str], bytes]]:
        with self.lock:
            return [(h, b) for h, b in self.deliveries if json.loads(b)["iccid"] == iccid]


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver()
    with serve(hook.app) as url:
        yield hook, f"{url}/events"


@pytest.fixture(scope="module")
def sim_url(receiver: tuple[Receiver, str]) -> Iterator[str]:
    app = create_app(API_KEY, receiver[1], seed=13, rate_limit_tokens=None)
    with serve(app) as url:
        yield url


@pytest.fixture
async def sim(sim_url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim_url, headers={"X-API-Key": API_KEY}) as client:
        yield client
        await client.post("/_sim/faults", json={})
        await client.post(
            "/_sim/esimgo", json={"rate_limit_tokens": None, "signature_encoding": "hex"}
        )
        await client.post("/_sim/config", json={"webhook_duplicate_rate": 0})


def signature(body: bytes, encoding: str) -> str:
    digest = hmac.new(API_KEY.encode(), body, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


async def used_up(sim: httpx.AsyncClient, hook: Receiver, iccid: str, count: int) -> list[Any]:
    await sim.post("/_sim/traffic", json={"iccid": iccid, "bytes_per_second": 2_000_000})
    await assign(sim, iccid, TEN_S)

    async def all_in() -> bool:
        return len(hook.of(iccid)) >= count

    await wait_for(all_in)
    return hook.of(iccid)


async def test_first_use_then_utilisation_at_50_80_100_signed_hex_over_the_raw_body(
    sim: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hook = receiver[0]
    iccid = await enrolled(sim)
    deliveries = await used_up(sim, hook, iccid, 4)
    events = [json.loads(body) for _, body in deliveries]
    assert [e["alertType"] for e in events] == [
        "FirstUse",
        "Utilisation",
        "Utilisation",
        "Utilisation",
    ]
    assert [e["bundle"]["remainingQuantity"] for e in events[1:]] == [500_000, 200_000, 0]
    [pid] = [p for action, p in await ledger(sim, iccid) if action == "order"]
    bundle = events[0]["bundle"]
    assert bundle["id"] == pid and bundle["name"] == TEN_S and bundle["initialQuantity"] == 10**6
    assert bundle["reference"].endswith("-0") and bundle["unlimited"] is False
    assert bundle["startTime"].endswith("Z") and bundle["endTime"] > bundle["startTime"]
    for headers, body in deliveries:
        assert headers["x-signature-sha256"] == signature(body, "hex")


async def test_the_signature_can_be_base64_and_callbacks_can_come_twice(
    sim: httpx.AsyncClient, receiver: tuple[Receiver, str]
) -> None:
    hook = receiver[0]
    await sim.post("/_sim/esimgo", json={"signature_encoding": "base64"})
    await sim.post("/_sim/config", json={"webhook_duplicate_rate": 1})
    iccid = await enrolled(sim)
    deliveries = await used_up(sim, hook, iccid, 8)
    for headers, body in deliveries:
        assert headers["x-signature-sha256"] == signature(body, "base64")
    bodies = [body for _, body in deliveries]
    assert all(bodies.count(b) == 2 for b in bodies)


async def test_every_response_carries_the_rate_limit_and_over_it_is_429(
    sim: httpx.AsyncClient,
) -> None:
    await sim.post("/_sim/esimgo", json={"rate_limit_tokens": 4})
    # One window is one wall-clock second: start early in one.
    while time.time() % 1 > 0.3:
        await asyncio.sleep(0.02)
    read = await sim.get(f"{V}/catalogue/{DAILY}")
    assert read.headers["x-ratelimit-limit"] == "4"
    assert (read.headers["x-ratelimit-cost"], read.headers["x-ratelimit-remaining"]) == ("1", "3")
    assert read.headers["x-ratelimit-reset"].endswith("Z")
    forbidden = await sim.get(f"{V}/catalogue", headers={"X-API-Key": "nope"})
    assert forbidden.status_code == 403 and forbidden.headers["x-ratelimit-remaining"] == "2"
    order = {"type": "validate", "quantity": 1, "item": DAILY}
    bought = await sim.post(f"{V}/orders", json=order)
    assert (bought.headers["x-ratelimit-cost"], bought.headers["x-ratelimit-remaining"]) == (
        "2",
        "0",
    )
    over = await sim.get(f"{V}/catalogue")
    assert over.status_code == 429 and over.json() == {"message": "Rate limit exceeded"}
    assert over.headers["retry-after"] == "1" and over.headers["x-ratelimit-remaining"] == "0"
    assert (await sim.get("/_sim/faults")).status_code == 200  # the control API is exempt
    await asyncio.sleep(1.0)
    assert (await sim.get(f"{V}/catalogue")).status_code == 200


async def test_outages_and_errors_answer_503_in_the_carriers_shape(
    sim: httpx.AsyncClient,
) -> None:
    await sim.post("/_sim/faults", json={"outage_seconds": 5})
    down = await sim.get(f"{V}/catalogue")
    assert down.status_code == 503 and set(down.json()) == {"message"}
    assert 1 <= int(down.headers["retry-after"]) <= 5
    await sim.post("/_sim/faults", json={"error_rate": 1})
    iccid = await enrolled(sim)
    body = {
        "type": "transaction",
        "assign": True,
        "order": [{"type": "bundle", "quantity": 1, "item": DAILY, "iccids": [iccid]}],
    }
    failed = await sim.post(f"{V}/orders", json=body)
    assert failed.status_code == 503 and failed.headers["retry-after"] == "1"
    assert await ledger(sim, iccid) == []  # not applied


async def test_a_lost_response_still_buys_and_latency_slows_answers(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await sim.post("/_sim/faults", json={"lose_responses": 1})
    body = {
        "type": "transaction",
        "assign": True,
        "order": [{"type": "bundle", "quantity": 1, "item": DAILY, "iccids": [iccid]}],
    }
    assert (await sim.post(f"{V}/orders", json=body)).status_code == 504
    assert [a for a, _ in await ledger(sim, iccid)] == ["order"]
    await sim.post("/_sim/faults", json={"latency_ms": 200})
    began = time.monotonic()
    assert (await sim.get(f"{V}/catalogue")).status_code == 200
    assert time.monotonic() - began >= 0.2


async def test_a_slow_commit_buys_even_when_the_client_gave_up_and_reads_answer_at_once(
    sim: httpx.AsyncClient,
) -> None:
    iccid = await enrolled(sim)
    await sim.post("/_sim/faults", json={"commit_delay_ms": 600})
    body = {
        "type": "transaction",
        "assign": True,
        "order": [{"type": "bundle", "quantity": 1, "item": DAILY, "iccids": [iccid]}],
    }
    with pytest.raises(httpx.ReadTimeout):
        await sim.post(f"{V}/orders", json=body, timeout=0.2)
    began = time.monotonic()
    assert (await sim.get(f"{V}/esims/{iccid}/bundles")).status_code == 200
    assert time.monotonic() - began < 0.3
    assert await ledger(sim, iccid) == []  # not yet committed

    async def committed() -> bool:
        return [a for a, _ in await ledger(sim, iccid)] == ["order"]

    await wait_for(committed, timeout=2.0)


def test_state_survives_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "esimgo.json"
    iccid = new_iccid()
    with serve(create_app(API_KEY, state_file=state, rate_limit_tokens=None)) as url:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}) as client:
            assert client.post("/_sim/esims", json={"iccids": [iccid]}).status_code == 200
            client.post(f"{V}/orders", json={"type": "transaction", "quantity": 3, "item": DAILY})
            applied = client.post(f"{V}/esims/apply", json={"iccid": iccid, "bundle": DAILY})
            assert applied.status_code == 200, applied.text
    with serve(create_app(API_KEY, state_file=state, rate_limit_tokens=None)) as url:
        with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}) as client:
            stock = client.get(f"{V}/inventory").json()["bundles"]
            assert [(b["name"], b["available"]) for b in stock] == [(DAILY, 2)]
            listed = client.get(f"{V}/esims/{iccid}/bundles").json()["bundles"]
            assert listed[0]["assignments"][0]["assignmentReference"].endswith("-0")


def test_refuses_to_start_without_an_api_key() -> None:
    with pytest.raises(SimulatorConfigError):
        create_app("")


def test_command_line_errors_are_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ESIMGO__API_KEY", raising=False)
    with pytest.raises(SystemExit) as exit_:
        main(["--port", "8103"])
    assert exit_.value.code == 2
    assert "ESIMGO__API_KEY" in capsys.readouterr().err
    monkeypatch.setenv("ESIMGO__API_KEY", "k")
    monkeypatch.setenv("ESIMGO_SIM_RATE_LIMIT", "lots")
    with pytest.raises(SystemExit):
        main([])
    assert "ESIMGO_SIM_RATE_LIMIT" in capsys.readouterr().err
