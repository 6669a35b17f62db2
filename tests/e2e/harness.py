"""An end-to-end rig: dev server, Telna-like simulator and API over real HTTP, a worker.

Each test gets a fresh SQLite database and task queue; the simulator and the API run
under uvicorn in background threads; the worker runs in the test's event loop.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlmodel import select
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.catalog import sync_catalogue
from api.app import create_app as create_api
from carriers.telna import TelnaCarrier
from config import Settings, TelnaSettings
from enrolment import EnrolRequest, enrol, workflow_id
from models.db import init_db, session_scope
from models.identifiers import make_iccid
from models.payloads import ActionRequest, BalanceStatusView, Policy
from models.tables import BalanceLine, LineEvent
from simulators.telna import create_app as create_telna
from tests.servers import serve
from worker import build_worker
from workflows.balance import BalanceWorkflow

API_KEY = "telna-test-key"
WEBHOOK_SECRET = "telna-test-webhook-secret"
OPERATOR_KEY = "operator-test-key"
SERVICE_KEY = "service-test-key"
ENDED = {"expired", "exhausted", "cancelled"}


def iccids(n: int, start: int = 0) -> list[str]:
    base = uuid.uuid4().int % 10**8
    return [make_iccid(f"8944{base:08d}{start + i:06d}") for i in range(n)]


@dataclass
class Rig:
    client: Client
    settings: Settings
    sim_url: str
    api_url: str
    http: httpx.AsyncClient

    async def add_esims(self, *iccid: str) -> None:
        r = await self.http.post(f"{self.sim_url}/_sim/esims", json={"iccids": list(iccid)})
        r.raise_for_status()

    async def traffic(self, iccid: str, bytes_per_second: float) -> None:
        body = {"iccid": iccid, "bytes_per_second": bytes_per_second}
        r = await self.http.post(f"{self.sim_url}/_sim/traffic", json=body)
        r.raise_for_status()

    async def ledger(self, iccid: str | None = None) -> list[dict[str, Any]]:
        params = {"iccid": iccid} if iccid else {}
        r = await self.http.get(f"{self.sim_url}/_sim/ledger", params=params)
        r.raise_for_status()
        entries: list[dict[str, Any]] = r.json()["entries"]
        return entries

    async def timeline(self, iccid: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.sim_url}/_sim/timeline/{iccid}")
        r.raise_for_status()
        intervals: list[dict[str, Any]] = r.json()["intervals"]
        return intervals

    async def enrol(
        self,
        iccid: str,
        product_id: str,
        lines: int | None = None,
        policy: Policy | None = None,
    ) -> WorkflowHandle[Any, Any]:
        req = EnrolRequest(
            iccid=iccid, carrier="telna", product_id=product_id, lines=lines, policy=policy
        )
        await enrol(self.client, self.settings.database_url, self.settings.task_queue, req, "test")
        return self.client.get_workflow_handle(workflow_id(iccid))

    async def status(self, iccid: str) -> BalanceStatusView:
        handle = self.client.get_workflow_handle_for(BalanceWorkflow.run, workflow_id(iccid))
        return await handle.query(BalanceWorkflow.status)

    async def wait_for(
        self,
        iccid: str,
        check: Callable[[BalanceStatusView], bool],
        timeout: float,
        what: str,
    ) -> BalanceStatusView:
        deadline = time.monotonic() + timeout
        status = await self.status(iccid)
        while not check(status):
            if time.monotonic() > deadline:
                raise AssertionError(f"{iccid}: timed out waiting for {what}; last {status}")
            await asyncio.sleep(0.25)
            status = await self.status(iccid)
        return status

    async def signal(self, iccid: str, name: str) -> None:
        handle = self.client.get_workflow_handle(workflow_id(iccid))
        await handle.signal(name, ActionRequest(actor="test"))

    async def cancel_and_wait(self, *iccid: str) -> None:
        for one in iccid:
            await self.signal(one, "cancel")
        for one in iccid:
            await self.client.get_workflow_handle(workflow_id(one)).result()

    async def assert_database_matches_carrier(self, *iccid: str) -> None:
        """Every order at the carrier is a line in the database with the same package, and
        every carrier action on it is an event in our ledger — and the reverse."""
        for one in iccid:
            entries = await self.ledger(one)
            with session_scope(self.settings.database_url) as session:
                lines = session.exec(select(BalanceLine).where(BalanceLine.iccid == one)).all()
                events = session.exec(
                    select(LineEvent).where(
                        LineEvent.balance_id.in_({line.balance_id for line in lines})  # type: ignore[attr-defined]
                    )
                ).all()
            by_ref = {line.reference: line for line in lines}
            orders = [e for e in entries if e["action"] == "order"]
            ordered = sorted(e["reference"] for e in orders)
            assert ordered == sorted(by_ref), (one, ordered, sorted(by_ref))
            for entry in orders:
                assert by_ref[entry["reference"]].carrier_line_id == entry["package_id"], entry
            by_package = {line.carrier_line_id: line for line in lines}
            kinds: dict[int, set[str]] = {}
            for event in events:
                if event.seq is not None:
                    kinds.setdefault(event.seq, set()).add(event.kind)
            for entry in entries:
                line = by_package[entry["package_id"]]
                seen = kinds.get(line.seq, set())
                action = entry["action"]
                if action == "order":
                    assert "ordered" in seen, (entry, seen)
                elif action == "activate":
                    assert line.activated_at is not None and "activated" in seen, (entry, seen)
                elif action in ("deactivate", "expire", "cancel"):
                    assert line.state in ENDED | {"failed"}, (entry, line.state)
                    assert seen & ENDED, (entry, seen)
            for line in lines:
                if line.state == "active":
                    assert not any(
                        e["package_id"] == line.carrier_line_id
                        and e["action"] in ("deactivate", "expire", "cancel")
                        for e in entries
                    ), f"line {line.seq} active in the database but ended at the carrier"


def none_seconds(intervals: list[dict[str, Any]], until: datetime | None = None) -> float:
    """Seconds without any active line in the carrier's timeline (before ``until``)."""
    total = 0.0
    now = datetime.now(UTC)
    for interval in intervals:
        if interval["state"] != "none":
            continue
        start = datetime.fromisoformat(interval["start"])
        end = datetime.fromisoformat(interval["end"]) if interval["end"] else now
        if until is not None:
            end = min(end, until)
        total += max(0.0, (end - start).total_seconds())
    return total


@asynccontextmanager
async def rig(
    env: WorkflowEnvironment, tmp: Path, seed: int = 7, database_url: str | None = None
) -> AsyncIterator[Rig]:
    """The rig on ``database_url`` (the ``database_url`` fixture), else a SQLite file in tmp."""
    target = env.client.service_client.config.target_host
    settings = Settings(
        database_url=database_url or f"sqlite:///{tmp / 'balance.db'}",
        temporal_address=target,
        task_queue=f"esim-balance-{uuid.uuid4().hex[:8]}",
        api_keys=SecretStr(f"operator:{OPERATOR_KEY},service:{SERVICE_KEY}"),
        telna=TelnaSettings(
            base_url="http://unused",
            api_key=SecretStr(API_KEY),
            webhook_secret=SecretStr(WEBHOOK_SECRET),
        ),
    )
    init_db(settings.database_url)
    with ExitStack() as stack:
        api_url = stack.enter_context(serve(create_api(settings)))
        sim_url = stack.enter_context(
            serve(
                create_telna(
                    API_KEY,
                    WEBHOOK_SECRET,
                    webhook_url=f"{api_url}/v1/carriers/telna/events",
                    seed=seed,
                )
            )
        )
        settings.telna.base_url = sim_url
        carrier = TelnaCarrier(sim_url, API_KEY, timeout=5.0)
        carriers = {"telna": carrier}
        await sync_catalogue(carriers, settings.database_url)
        with ThreadPoolExecutor(max_workers=settings.worker_max_concurrent_activities) as executor:
            worker = build_worker(env.client, settings, carriers, executor)
            async with worker, httpx.AsyncClient(timeout=10) as http:
                yield Rig(env.client, settings, sim_url, api_url, http)
        await carrier.aclose()
