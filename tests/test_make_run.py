"""``make run`` from a fresh data directory: ready, the demo fleet rotating within two
minutes at each of the three carriers (and shown so on the dashboard), and nothing left
behind by Ctrl-C; a second run reuses the fleet.

stack.py runs as ``make run`` runs it, on ports and a data directory of its own.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import demo
from ports import free_port
from simulators.esimgo import CATALOGUE as ESIMGO_CATALOGUE
from tests.test_stack import (
    PORT_SETTINGS,
    SECRET_NAMES,
    StackRun,
    alive,
    live_processes,
    read_env_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WITHIN = 120.0  # from start to the first rotation shown
# Addresses that would otherwise point the stack at another one's services or database.
FOLLOW_PORTS = {
    "DATABASE_URL",
    "TEMPORAL_ADDRESS",
    "TELNA__BASE_URL",
    "WEBBING__BASE_URL",
    "ESIMGO__BASE_URL",
    "ESIMGO_SIM_CALLBACK_URL",
}
ROTATIONS = re.compile(r"^\[progress\] .* rotations ([1-9]\d*)\b")


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """Our environment without secrets or addresses, with free ports for every service."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES | FOLLOW_PORTS}
    ports = {name: str(free_port()) for name in (*PORT_SETTINGS, "WORKER_METRICS_PORT")}
    return env | ports


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("make-run") / "data"


@pytest.fixture
def stack_run(data_dir: Path, env: dict[str, str]) -> Iterator[StackRun]:
    run = StackRun(data_dir, env, only=None)
    try:
        yield run
    finally:
        run.stop()
        run.clean_up()


def stop_and_check_nothing_is_left(run: StackRun) -> None:
    groups = set(run.children())  # each service leads its own process group
    assert len(groups) == 6

    assert run.stop() == 0

    assert "[stack] stopped" in run.output
    left = [pid for pid, (_, ppid, pgrp) in live_processes().items() if pgrp in groups]
    assert left == []
    assert not any(alive(pid) for pid in run.seen_children)


def test_fresh_start_is_ready_and_shows_rotations_within_two_minutes(
    stack_run: StackRun, env: dict[str, str], data_dir: Path
) -> None:
    began = time.monotonic()

    stack_run.wait_for("[stack] ready", timeout=WITHIN)
    ready_after = time.monotonic() - began
    rotation = stack_run.wait_for(ROTATIONS, timeout=WITHIN - ready_after)
    rotation_after = time.monotonic() - began
    print(f"ready after {ready_after:.0f}s, first rotation shown after {rotation_after:.0f}s")

    api = f"http://127.0.0.1:{env['API_PORT']}"
    block = stack_run.output.split("[stack] all up:")[1].split("Ctrl-C to stop")[0]
    assert f"dashboard    {api}/" in block
    assert f"API docs     {api}/docs" in block
    assert f"Temporal UI  http://127.0.0.1:{env['TEMPORAL_UI_PORT']}/" in block
    assert (
        "[demo] 24 eSIMs on compressed passes at telna, webbing and esimgo: "
        "24 balances started, 0 already running" in stack_run.output
    )
    assert "24 balances" in rotation
    operator = operator_key(data_dir)
    check_esimgo_is_wired(api, env, operator)
    check_each_carrier_rotates_and_shows(api, operator)
    stop_and_check_nothing_is_left(stack_run)


def operator_key(data_dir: Path) -> str:
    keys = read_env_file(data_dir / "secrets.env")["API_KEYS"]
    return next(k.split(":", 1)[1] for k in keys.split(",") if k.startswith("operator:"))


def check_each_carrier_rotates_and_shows(api: str, operator: str) -> None:
    """Every carrier's balances rotate (the continuity report, by carrier), and the
    dashboard lists each carrier and draws an eSIM Go balance's carrier lane."""
    headers = {"Authorization": f"Bearer {operator}"}
    deadline = time.monotonic() + 90
    while True:
        report = httpx.get(f"{api}/v1/continuity", headers=headers, trust_env=False).json()
        rotations = {c: figures["rotations"] for c, figures in report["carriers"].items()}
        if all(rotations.get(c, 0) > 0 for c in demo.CARRIERS):
            break
        assert time.monotonic() < deadline, f"not every carrier rotated: {report}"
        time.sleep(2)
    print(f"rotations by carrier: {rotations}")
    assert report["carriers"]["esimgo"]["gap_seconds"] == 0, report
    # The demo's customers: what their passes cost, per customer.
    spend = httpx.get(
        f"{api}/v1/spend", params={"group_by": "customer"}, headers=headers, trust_env=False
    ).json()
    assert {g["key"] for g in spend["groups"]} == set(demo.CUSTOMERS), spend
    assert all(g["amount_cents"] > 0 for g in spend["groups"]), spend
    with httpx.Client(base_url=api, trust_env=False) as dashboard:
        signed_in = dashboard.post("/dashboard/signin", data={"api_key": operator})
        assert signed_in.status_code == 303
        fleet = dashboard.get("/").text
        for carrier in demo.CARRIERS:
            assert f'data-carrier="{carrier}"' in fleet
        iccid = next(e.iccid for e in demo.demo_fleet() if e.carrier == "esimgo")
        page = dashboard.get(f"/dashboard/esims/{iccid}")
        assert page.status_code == 200
        assert "carrier: esimgo" in page.text and "(unreadable)" not in page.text


def check_esimgo_is_wired(api: str, env: dict[str, str], operator: str) -> None:
    """The worker synced eSIM Go's catalogue from its simulator (one key for both ends),
    and the simulator calls back the API."""
    products = httpx.get(
        f"{api}/v1/products",
        params={"carrier": "esimgo"},
        headers={"Authorization": f"Bearer {operator}"},
        trust_env=False,
    ).json()
    assert products["count"] == len(ESIMGO_CATALOGUE), products
    assert {p["rotation"] for p in products["data"]} == {"queued"}
    sim = f"http://127.0.0.1:{env['ESIMGO_PORT']}"
    config = httpx.get(f"{sim}/_sim/config", trust_env=False).json()
    assert config["webhook_url"] == f"{api}/v1/carriers/esimgo/events"


def test_next_start_reuses_the_demo_fleet(stack_run: StackRun) -> None:
    stack_run.wait_for("[stack] ready", timeout=WITHIN)

    assert "0 balances started, 24 already running" in stack_run.output
    progress = stack_run.wait_for("[progress]", timeout=30)
    assert "24 balances" in progress
    stop_and_check_nothing_is_left(stack_run)
