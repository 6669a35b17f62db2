"""A pass without an allowance is refused where it enters, never a workflow task failed.

The simulators sell one such product beside their catalogue. The catalogue sync leaves it
out; enrolment refuses a row of it; a package answer carrying it is a malformed carrier
answer at both clients; and a balance on it (its figures synced before the carrier
started answering 0) shows Failing, buys once, and fails no workflow task.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlmodel import select
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.carrier import CarrierActivities
from carriers.base import Carrier
from carriers.errors import CarrierOutcomeUnknown, CarrierUnavailable
from carriers.telna import TelnaCarrier
from carriers.webbing import WebbingCarrier
from models import search
from models.db import migrate, session_scope
from models.identifiers import make_iccid
from models.payloads import BalanceState, BalanceStatus, ProductSpec
from models.tables import Balance, Esim, Product
from services.catalog import sync_catalogue
from services.enrolment import EnrolmentError, EnrolRequest, register
from services.metrics import REGISTRY
from simulators import telna as telna_sim
from simulators import webbing as webbing_sim
from simulators.records import Product as SimProduct
from tests.fakes import FakeCarrier
from tests.servers import serve
from workflows.balance import BalanceWorkflow

API_KEY = "zero-allowance-key"
WEBBING = ("zero-user", "zero-password", "zero-wskey")
# Telna's id and Webbing's, for the same pass: 10 s, no allowance.
ZERO = {"telna": "compressed-10s-zero", "webbing": "9919"}


def _zero(carrier: str) -> SimProduct:
    return SimProduct(ZERO[carrier], "Compressed 10 s, no allowance", 0, 10, 128, 1)


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, str]]:
    telna = telna_sim.create_app(
        API_KEY, "secret", seed=3, products=[*telna_sim.CATALOGUE, _zero("telna")]
    )
    webbing = webbing_sim.create_app(
        *WEBBING, seed=3, products=[*webbing_sim.CATALOGUE, _zero("webbing")]
    )
    with serve(telna) as telna_url, serve(webbing) as webbing_url:
        yield {"telna": telna_url, "webbing": webbing_url}


@pytest.fixture
async def carriers(sims: dict[str, str]) -> AsyncIterator[dict[str, Carrier]]:
    clients: dict[str, Carrier] = {
        "telna": TelnaCarrier(sims["telna"], API_KEY, timeout=5.0),
        "webbing": WebbingCarrier(sims["webbing"], *WEBBING, timeout=5.0),
    }
    yield clients
    for client in clients.values():
        await client.aclose()


async def _new_esim(sim_url: str) -> str:
    iccid = make_iccid(f"8944{uuid.uuid4().int % 10**14:014d}")
    async with httpx.AsyncClient(base_url=f"{sim_url}/_sim") as control:
        (await control.post("/esims", json={"iccids": [iccid]})).raise_for_status()
    return iccid


async def _orders(sim_url: str, iccid: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=f"{sim_url}/_sim") as control:
        ledger = (await control.get("/ledger", params={"iccid": iccid})).json()["entries"]
    return [e for e in ledger if e["action"] == "order" and e["iccid"] == iccid]


def _skipped(carrier: str) -> float:
    value = REGISTRY.get_sample_value("esim_catalogue_products_skipped_total", {"carrier": carrier})
    return value or 0.0


async def test_the_catalogue_sync_leaves_out_a_product_without_allowance(
    carriers: dict[str, Carrier], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite:///{tmp_path / 'balance.db'}"
    migrate(url)
    before = {name: _skipped(name) for name in carriers}
    with caplog.at_level(logging.WARNING, logger="services.catalog"):
        synced = await sync_catalogue(carriers, url)
    assert synced == {"telna": len(telna_sim.CATALOGUE), "webbing": len(webbing_sim.CATALOGUE)}
    with session_scope(url) as session:
        ids = set(session.exec(select(Product.id)).all())
    assert "telna-compressed-10s" in ids and "webbing-9010" in ids
    assert not ids & {"telna-compressed-10s-zero", "webbing-9919"}
    assert {name: _skipped(name) - before[name] for name in carriers} == {
        "telna": 1,
        "webbing": 1,
    }
    said = [r.getMessage() for r in caplog.records if r.name == "services.catalog"]
    assert sorted(said) == [
        "catalogue sync of telna leaves out telna-compressed-10s-zero: its allowance is 0 bytes",
        "catalogue sync of webbing leaves out webbing-9919: its allowance is 0 bytes",
    ]


def test_enrolment_refuses_a_product_without_allowance_and_writes_nothing(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'balance.db'}"
    migrate(url)
    with session_scope(url) as session:  # a row from before the sync left such products out
        session.add(
            Product(
                id="telna-compressed-10s-zero",
                carrier="telna",
                carrier_product_id=ZERO["telna"],
                name="no allowance",
                allowance_bytes=0,
                validity_seconds=10,
                throttle_kbps=128,
                price_cents=1,
            )
        )
    iccid = make_iccid(f"8944{uuid.uuid4().int % 10**14:014d}")
    req = EnrolRequest(iccid=iccid, carrier="telna", product_id="telna-compressed-10s-zero")
    refusal = "product telna-compressed-10s-zero cannot be sold: its allowance is 0 bytes"
    with pytest.raises(EnrolmentError, match=refusal):
        register(url, req, "test")
    with session_scope(url) as session:
        assert session.exec(select(Esim)).all() == []
        assert session.exec(select(Balance)).all() == []


@pytest.mark.parametrize("name", ["telna", "webbing"])
async def test_a_package_without_allowance_is_a_malformed_answer(
    carriers: dict[str, Carrier], sims: dict[str, str], name: str
) -> None:
    carrier, iccid = carriers[name], await _new_esim(sims[name])
    reference = f"bal_{uuid.uuid4().hex[:12]}:1"
    # The order went out and was carried out: its outcome is unknown, so it is looked for.
    with pytest.raises(CarrierOutcomeUnknown, match="allowance_bytes"):
        await carrier.order(iccid, ZERO[name], reference)
    for _ in range(60):  # a change of product in place shows once in effect
        try:
            await carrier.find_lines(iccid)
        except CarrierUnavailable as unreadable:
            assert "allowance_bytes" in str(unreadable)
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the package without allowance was read")
    (order,) = await _orders(sims[name], iccid)  # bought once; our reference, if kept
    assert order["reference"] in (None, reference), order


async def test_a_balance_answered_without_allowance_is_failing_and_fails_no_workflow_task(
    dev_env: WorkflowEnvironment, carriers: dict[str, Carrier], sims: dict[str, str]
) -> None:
    client, iccid = dev_env.client, await _new_esim(sims["telna"])
    # Synced when the carrier still said 1 MB; its packages now come with none.
    product = ProductSpec(
        id="telna-compressed-10s-zero",
        carrier="telna",
        carrier_product_id=ZERO["telna"],
        allowance_bytes=1_000_000,
        validity_seconds=10,
    )
    state = BalanceState(
        balance_id=f"bal_{uuid.uuid4().hex[:12]}",
        iccid=iccid,
        carrier="telna",
        product=product,
    )
    acts, store = CarrierActivities(carriers), FakeCarrier()
    queue = str(uuid.uuid4())
    async with Worker(
        client,
        task_queue=queue,
        workflows=[BalanceWorkflow],
        activities=[
            acts.order_line,
            acts.activate_line,
            acts.deactivate_line,
            acts.line_usage,
            store.record_changes,
        ],
    ):
        handle = await client.start_workflow(
            BalanceWorkflow.run, state, id=f"balance-{iccid}", task_queue=queue
        )
        for _ in range(100):
            status = await handle.query(BalanceWorkflow.status)
            if status.status == BalanceStatus.Failing:
                break
            await asyncio.sleep(0.2)
        assert status.status == BalanceStatus.Failing, status
        assert status.failing_reason is not None and "ordering line 1" in status.failing_reason
        assert status.active is None and status.scheduled is None
        described = await handle.describe()
        assert described.typed_search_attributes.get(search.BALANCE_STATE) == "Failing"
        # Why, in the order's last failure (the Web UI shows it with the pending activity).
        [order] = described.raw_description.pending_activities
        assert "allowance_bytes" in order.last_failure.message
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(
                "change_product",
                {"product": {**product.model_dump(), "allowance_bytes": 0}, "actor": "test"},
            )
        history = await handle.fetch_history()
        await handle.terminate("test over")
    failed = [
        e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    assert failed == []
    (order,) = await _orders(sims["telna"], iccid)  # a new eSIM: line 1, bought once
    assert order["reference"] in (None, f"{state.balance_id}:1"), order
