"""The API served on a real port against the real Temporal dev server, with seeded data.

No worker polls the task queue: a seeded balance's workflow sits at its first task, so
every signal shows as one more event in its history and nothing else moves.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Response
from pydantic import SecretStr
from sqlmodel import SQLModel, select
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from config import Settings, TelnaSettings
from models.db import init_db, session_scope
from models.identifiers import make_eid, make_iccid
from models.payloads import BalanceState
from models.tables import Balance, BalanceLine, Esim, IdempotencyRecord, LineEvent, Product
from services.enrolment import EnrolRequest, register, start_workflow, workflow_id
from simulators import sns
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


USAGE_ALERT, STATUS_CHANGE = "PACKAGE_DATA_USAGE_ALERT", "PACKAGE_STATUS_CHANGE"
HELD_PACKAGE = "pkg-held"  # the open balance's active line at Telna


def telna_event(
    iccid: str,
    package_id: str = "pkg-unknown",
    used: int = 800_000,
    name: str = USAGE_ALERT,
    status: str = "ACTIVATED",
) -> bytes:
    """A Telna event as the record has it: usage of a package, or its status."""
    return json.dumps(
        {
            "eventName": name,
            "eventTimestamp": int(time.time() * 1000),
            "eventDetails": {
                "sim": {"iccid": iccid},
                "package": {
                    "id": package_id,
                    "packageUsedBytes": used,
                    "packageTotalBytes": 1_000_000,
                    "status": {"previousValue": "ACTIVATED", "currentValue": status},
                },
                "packageTemplate": {"id": "compressed-60s"},
                "inventory": {"id": 1},
            },
        }
    ).encode()


def raw_delivery(
    event: bytes, secret: str = WEBHOOK_SECRET, message_id: str | None = None
) -> dict[str, str]:
    """Headers of ``event`` sent by SNS with raw message delivery and Basic credentials."""
    credentials = base64.b64encode(f"telna:{secret}".encode()).decode()
    return {
        "Content-Type": sns.CONTENT_TYPE,
        "x-amz-sns-message-type": "Notification",
        "x-amz-sns-message-id": message_id or str(uuid.uuid4()),
        "x-amz-sns-rawdelivery": "true",
        "Authorization": f"Basic {credentials}",
    }


def hold_line(
    url: str,
    iccid: str,
    package_id: str,
    state: str = "active",
    seq: int = 1,
    ends_at: datetime | None = None,
) -> str:
    """A balance of ``iccid`` (made if need be) holding line ``seq``, Telna's
    ``package_id``, in ``state``; the balance id."""
    init_db(url)
    with session_scope(url) as session:
        balance = session.exec(select(Balance).where(Balance.iccid == iccid)).first()
        if balance is None:
            if session.get(Product, "telna-compressed-60s") is None:
                session.add(product("telna", "compressed-60s", 60))
            if session.get(Esim, iccid) is None:
                session.add(Esim(iccid=iccid, carrier="telna"))
            session.flush()
            balance = Balance(
                id=f"bal_{uuid.uuid4().hex[:12]}",
                iccid=iccid,
                carrier="telna",
                product_id="telna-compressed-60s",
                state="Active",
                workflow_id=workflow_id(iccid),
            )
            session.add(balance)
            session.flush()
        session.add(
            BalanceLine(
                balance_id=balance.id,
                seq=seq,
                iccid=iccid,
                carrier="telna",
                carrier_line_id=package_id,
                reference=f"{balance.id}:{seq}",
                product_id="telna-compressed-60s",
                state=state,
                allowance_bytes=1_000_000,
                ends_at=ends_at,
            )
        )
        return balance.id


@dataclass
class SnsStandIn:
    """AWS SNS as far as a subscriber reaches it: the signing certificate and the
    SubscribeURL, served on a real port; every visit to the SubscribeURL is kept."""

    signer: sns.Signer = field(default_factory=sns.Signer)
    url: str = ""
    visits: list[str] = field(default_factory=list)
    fetched: int = 0  # certificate requests
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get(self.signer.cert_path)
        async def certificate() -> Response:
            with self.lock:
                self.fetched += 1
            return Response(self.signer.pem)

        @app.get(sns.CONFIRM_PATH)
        async def confirm(Token: str) -> Response:  # noqa: N803  (SNS's name)
            with self.lock:
                self.visits.append(Token)
            return Response("<ConfirmSubscriptionResponse/>")

        return app

    def wrapped(self, event: bytes, message_id: str | None = None) -> tuple[bytes, dict[str, str]]:
        """``event`` as SNS wraps it: the signed envelope, and its headers."""
        subscription = sns.Subscription("http://api.test/v1/carriers/telna/events")
        body, headers = sns.notification(
            json.loads(event), subscription, self.signer, self.url, time.time()
        )
        if message_id is not None:
            envelope = json.loads(body) | {"MessageId": message_id}
            body = json.dumps(self.signer.sign(envelope, self.url)).encode()
            headers["x-amz-sns-message-id"] = message_id
        return body, headers

    def confirmation(self, token: str = "") -> tuple[bytes, dict[str, str]]:
        subscription = sns.Subscription("http://api.test/v1/carriers/telna/events")
        if token:
            subscription.token = token
        return sns.confirmation(subscription, self.signer, self.url, time.time())


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
    sns: SnsStandIn

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

    def telna_event(self, used: int = 800_000) -> bytes:
        """A usage alert for the open balance's active line."""
        return telna_event(self.balance_iccid, HELD_PACKAGE, used)

    @staticmethod
    def telna_event_for(iccid: str, package_id: str = "pkg-unknown", **fields: Any) -> bytes:
        return telna_event(iccid, package_id, **fields)

    @staticmethod
    def raw(event: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
        return raw_delivery(event, secret)


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
    hold_line(settings.database_url, state.iccid, HELD_PACKAGE)
    await start_workflow(dev_env.client, settings.task_queue, state)
    stand_in = SnsStandIn()
    with ExitStack() as stack:
        stand_in.url = stack.enter_context(serve(stand_in.app()))
        settings.telna.sns_hosts = stand_in.url
        url = stack.enter_context(serve(create_app(settings)))
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
                stand_in,
            )
    await dev_env.client.get_workflow_handle(workflow_id(state.iccid)).terminate("test over")
