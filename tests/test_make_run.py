"""``make run`` from a fresh data directory: ready, the demo fleet rotating within two
minutes, and nothing left behind by Ctrl-C; a second run reuses the fleet.

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
    assert "24 balances started, 0 already running" in stack_run.output
    assert "24 balances" in rotation
    check_esimgo_is_wired(api, env, data_dir)
    stop_and_check_nothing_is_left(stack_run)


def check_esimgo_is_wired(api: str, env: dict[str, str], data_dir: Path) -> None:
    """The worker synced eSIM Go's catalogue from its simulator (one key for both ends),
    and the simulator calls back the API."""
    keys = read_env_file(data_dir / "secrets.env")["API_KEYS"]
    operator = next(k.split(":", 1)[1] for k in keys.split(",") if k.startswith("operator:"))
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
