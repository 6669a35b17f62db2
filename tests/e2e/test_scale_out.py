"""Scale-out: two worker processes on one task queue; one is killed (-9) mid-rotation.

Both are real ``worker.py`` subprocesses against the one dev server, sharing one
PostgreSQL database and the Telna-like simulator. Six balances rotate on 60 s passes
(a rotation every ~15 s each); once both workers have done work, one is killed with
SIGKILL. The other finishes every rotation: the carrier's timeline has no gap, and
no line was bought twice.

Lead and margin (55 s / 45 s) leave room for the worst a kill can do: an activity that
was running on the dead worker is retried only after its 30 s start-to-close timeout,
and its workflow task waits 5 s on the dead worker's sticky queue.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from carriers.telna import TelnaCarrier
from config import Settings, TelnaSettings
from models.db import migrate
from models.payloads import Policy
from services.catalog import sync_catalogue
from services.enrolment import workflow_id
from simulators.telna import create_app as create_telna
from tests.e2e.harness import API_KEY, WEBHOOK_SECRET, Rig, iccids, none_seconds
from tests.servers import serve

ROOT = Path(__file__).resolve().parents[2]
BALANCES = 6
POLICY = Policy(lead_seconds=55, margin_seconds=45)
PRODUCT = "telna-compressed-60s-manual"  # started by us: the activation a kill can hit

pytestmark = [pytest.mark.slow, pytest.mark.postgresql]


@contextmanager
def worker_process(settings: Settings, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python worker.py`` in its own process group, configured by the environment."""
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "TASK_QUEUE": settings.task_queue,
        "TELNA__BASE_URL": settings.telna.base_url,
        "TELNA__API_KEY": API_KEY,
        "TELNA__WEBHOOK_SECRET": WEBHOOK_SECRET,
        "WEBBING__BASE_URL": "http://127.0.0.1:9",  # not used here; its sync just fails
        "ESIMGO__BASE_URL": "http://127.0.0.1:9/v2.4",  # nor this one
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


async def _until_polling(log: Path, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while b"worker polling task queue" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, f"worker never polled: {log.read_text()}"
        await asyncio.sleep(0.2)


async def _workers_seen(client: Client, iccid: str) -> dict[str, list[datetime]]:
    """Per worker identity (``pid@host``), when it started tasks of this balance's runs."""
    seen: dict[str, list[datetime]] = {}
    async for run in client.list_workflows(f"WorkflowId = '{workflow_id(iccid)}'"):
        handle = client.get_workflow_handle(run.id, run_id=run.run_id)
        for event in (await handle.fetch_history()).events:
            identity = (
                event.workflow_task_started_event_attributes.identity
                or event.activity_task_started_event_attributes.identity
            )
            if identity:
                seen.setdefault(identity, []).append(event.event_time.ToDatetime(UTC))
    return seen


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_killed_worker_leaves_no_gap_and_no_double_purchase(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    settings = Settings(
        database_url=database_url,
        temporal_address=dev_env.client.service_client.config.target_host,
        task_queue=f"scale-out-{uuid.uuid4().hex[:8]}",
        telna=TelnaSettings(api_key=SecretStr(API_KEY), webhook_secret=SecretStr(WEBHOOK_SECRET)),
    )
    migrate(database_url)
    with ExitStack() as stack:
        sim_url = stack.enter_context(serve(create_telna(API_KEY, WEBHOOK_SECRET, seed=11)))
        settings.telna.base_url = sim_url
        carrier = TelnaCarrier(sim_url, API_KEY, timeout=5.0)
        await sync_catalogue({"telna": carrier}, database_url)
        await carrier.aclose()
        logs = [tmp_path / "worker-a.log", tmp_path / "worker-b.log"]
        doomed, survivor = (stack.enter_context(worker_process(settings, log)) for log in logs)
        for log, proc in zip(logs, (doomed, survivor), strict=True):
            await _until_polling(log, proc, 60)

        async with httpx.AsyncClient(timeout=10) as http:
            r = Rig(dev_env.client, settings, {"telna": sim_url}, "", http)
            fleet = iccids(BALANCES)
            await r.add_esims(*fleet)
            for iccid in fleet:
                await r.enrol(iccid, PRODUCT, policy=POLICY)
            for iccid in fleet:
                await r.wait_for(iccid, lambda s: s.rotations >= 1, 60, "a first rotation")

            # Kill while rotations are half done: next lines ordered, switches pending.
            for _ in range(100):
                statuses = [await r.status(iccid) for iccid in fleet]
                if sum(s.scheduled is not None for s in statuses) >= BALANCES // 2:
                    break
                await asyncio.sleep(0.2)
            os.killpg(doomed.pid, signal.SIGKILL)
            killed_at = datetime.now(UTC)
            assert sum(s.scheduled is not None for s in statuses) >= BALANCES // 2, statuses
            at_kill = {s.iccid: s.rotations for s in statuses}
            for iccid in fleet:
                await r.wait_for(
                    iccid,
                    lambda s, n=at_kill[iccid]: s.rotations >= n + 2,
                    90,
                    "two rotations after the kill",
                )
            stopped_at = datetime.now(UTC)
            await r.cancel_and_wait(*fleet)

            for iccid in fleet:
                intervals = await r.timeline(iccid)
                assert none_seconds(intervals, until=stopped_at) == 0, (iccid, intervals)
            assert any(e["action"] == "order" for e in await r.ledger())
            assert await r.purchases_made_twice(*fleet) == []
            await r.assert_database_matches_carrier(*fleet)
            await r.assert_histories_replay(*fleet, keep=tmp_path / "failed-histories")

            doomed_id = f"{doomed.pid}@"
            seen: dict[str, list[datetime]] = {}
            for iccid in fleet:
                for identity, times in (await _workers_seen(r.client, iccid)).items():
                    seen.setdefault(identity, []).extend(times)
            by_doomed = [t for i, ts in seen.items() if i.startswith(doomed_id) for t in ts]
            by_survivor = [
                t for i, ts in seen.items() if i.startswith(f"{survivor.pid}@") for t in ts
            ]
            assert by_doomed, f"the killed worker never worked: {list(seen)}"
            assert by_survivor, f"the surviving worker never worked: {list(seen)}"
            # A poll the dead worker had open may still be handed a task in the moment
            # before the server sees its connection close; that task then times out.
            assert max(by_doomed) <= killed_at + timedelta(seconds=2), (max(by_doomed), killed_at)
