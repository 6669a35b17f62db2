"""The API served on a real port against the real Temporal dev server, with seeded data.

No worker polls the task queue: a seeded balance's workflow sits at its first task, so
every signal shows as one more event in its history and nothing else moves.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from sqlmodel import SQLModel, select
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.telna_events import sign
from config import Settings, TelnaSettings
from models.db import init_db, session_scope
from models.identifiers import make_eid, make_iccid
from models.payloads import BalanceState
from models.tables import Balance, BalanceLine, Esim, IdempotencyRecord, LineEvent, Product
from services.enrolment import EnrolRequest, register, start_workflow, workflow_id
from tests.servers import serve

OPERATOR_KEY = "op-" + "k" * 20
SERVICE_KEY = "svc-" + "k" * 20
WEBHOOK_SECRET = "api-test-webhook-secret"
TABLES: tuple[type[SQLModel], ...] = (
    Esim,
    Product,
    Balance,
    BalanceLine,
    LineEvent,
    IdempotencyRecord,
)


def new_iccid() -> str:
    return make_iccid(f"8944{uuid.uuid4().int % 10**14:014d}")


def valid_eid() -> str:
    return make_eid(f"89049032{uuid.uuid4().int % 10**22:022d}")


def product(carrier: str, pid: str, validity: int) -> Product:
    return Product(
        id=f"{carrier}-{pid}",
        carrier=carrier,
        carrier_product_id=pid,
        name=pid,
        allowance_bytes=1_000_000,
        validity_seconds=validity,
        throttle_kbps=128,
        price_cents=1,
    )


@dataclass
class Api:
    """A served API app, its data and the means to look at both."""

    url: str
    settings: Settings
    temporal: Client
    http: httpx.AsyncClient
    balance_id: str  # open, its workflow started
    balance_iccid: str
    free_iccid: str  # registered at telna, no balance
    closed_balance_id: str

    @staticmethod
    def auth(role: str = "operator") -> dict[str, str]:
        key = {"operator": OPERATOR_KEY, "service": SERVICE_KEY}[role]
        return {"Authorization": f"Bearer {key}"}

    def database(self) -> tuple[Any, ...]:
        """Row counts of every table and a digest of every row."""
        with session_scope(self.settings.database_url) as session:
            rows = {t.__name__: [r.model_dump() for r in session.exec(select(t))] for t in TABLES}
        digest = hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode())
        return tuple(len(r) for r in rows.values()) + (digest.hexdigest(),)

    async def temporal_state(self) -> tuple[int, int, bool]:
        """(workflows on the task queue, events in the seeded workflow's history, whether
        the free eSIM has a workflow) — the last two are strongly consistent."""
        count = await self.temporal.count_workflows(f'TaskQueue = "{self.settings.task_queue}"')
        handle = self.temporal.get_workflow_handle(workflow_id(self.balance_iccid))
        history = (await handle.describe()).raw_description.workflow_execution_info
        try:
            await self.temporal.get_workflow_handle(workflow_id(self.free_iccid)).describe()
            free_started = True
        except RPCError:
            free_started = False
        return count.count, history.history_length, free_started

    def telna_event(self, event_id: str | None = None, used: int = 800_000) -> bytes:
        return self.telna_event_for(self.balance_iccid, self.balance_id, event_id, used)

    @staticmethod
    def telna_event_for(
        iccid: str,
        balance_id: str,
        event_id: str | None = None,
        used: int = 800_000,
        event: str = "usage.threshold",
    ) -> bytes:
        """A usage webhook body for line 1 of the balance, as the carrier sends it."""
        return json.dumps(
            {
                "event_id": event_id or str(uuid.uuid4()),
                "event": event,
                "timestamp": int(time.time() * 1000),
                "eventDetails": {
                    "iccid": iccid,
                    "package_id": "pkg-1",
                    "customer_ref": f"{balance_id}:1",
                    "threshold_percent": 80,
                    "data_usage": used,
                },
            }
        ).encode()

    @staticmethod
    def signed(body: bytes, secret: str = WEBHOOK_SECRET, at: int | None = None) -> dict[str, str]:
        t = int(time.time()) if at is None else at
        return {"Content-Type": "application/json", "Telna-Signature": sign(secret, body, t)}


def api_settings(env: WorkflowEnvironment, tmp: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": f"sqlite:///{tmp / 'api.db'}",
        "temporal_address": env.client.service_client.config.target_host,
        "task_queue": f"api-test-{uuid.uuid4().hex[:8]}",
        "api_keys": SecretStr(f"operator:{OPERATOR_KEY},service:{SERVICE_KEY}"),
        "telna": TelnaSettings(webhook_secret=SecretStr(WEBHOOK_SECRET)),
    }
    return Settings(**(values | overrides))


def seed(settings: Settings) -> tuple[BalanceState, str, str]:
    """Products, eSIMs, an open and a closed balance: (open one's state, free ICCID, closed id)."""
    url = settings.database_url
    init_db(url)
    balance_iccid, free_iccid, closed_iccid = new_iccid(), new_iccid(), new_iccid()
    with session_scope(url) as session:
        session.add(product("telna", "compressed-60s", 60))
        session.add(product("telna", "daily-1gb", 86_400))
        session.add(product("webbing", "1042", 86_400))
        # A row synced before the catalogue sync left such passes out: nothing to sell.
        empty = product("telna", "empty", 86_400)
        empty.allowance_bytes = 0
        session.add(empty)
        for iccid in (balance_iccid, free_iccid, closed_iccid):
            session.add(Esim(iccid=iccid, carrier="telna"))
        session.flush()
        closed = Balance(
            id="bal_closed00000",
            iccid=closed_iccid,
            carrier="telna",
            product_id="telna-daily-1gb",
            state="Cancelled",
            workflow_id=workflow_id(closed_iccid),
        )
        session.add(closed)
    req = EnrolRequest(iccid=balance_iccid, carrier="telna", product_id="telna-compressed-60s")
    state, _ = register(url, req, "test")
    with session_scope(url) as session:
        row = session.get(Balance, closed.id)
        assert row is not None
        row.closed_at, row.open_iccid = row.created_at, None
    return state, free_iccid, closed.id


@pytest.fixture(scope="module")
async def api(
    dev_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Api]:
    settings = api_settings(dev_env, tmp_path_factory.mktemp("api"))
    state, free_iccid, closed_id = seed(settings)
    await start_workflow(dev_env.client, settings.task_queue, state)
    with serve(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=20) as http:
            yield Api(
                url,
                settings,
                dev_env.client,
                http,
                state.balance_id,
                state.iccid,
                free_iccid,
                closed_id,
            )
    await dev_env.client.get_workflow_handle(workflow_id(state.iccid)).terminate("test over")
