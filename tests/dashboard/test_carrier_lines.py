"""The eSIM page reads the carrier through a worker, once per period whatever the views.

On the real dev server: the Telna-like simulator, a worker whose Telna client counts the
requests it sends, and the API, whose own Telna URL leads nowhere, so a page that shows
the carrier's package was read by the worker. Views within the period, one after
another as a page refreshes and all at once as many viewers, make one carrier read; the
next view after the period makes the next read. Without a worker or without Temporal,
the page shows the carrier as unread, beside our lines.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.auth import Role
from api.dashboard import carrier_lines
from api.dashboard import session as auth
from carriers.metered import metered
from carriers.telna import TelnaCarrier
from config import Settings, TelnaSettings
from models.db import init_db, session_scope
from models.identifiers import make_iccid
from models.tables import Balance, Esim
from ports import free_port
from services.metrics import REGISTRY
from simulators.telna import create_app as create_telna
from tests.servers import serve
from worker import build_worker
from workflows.carrier_lines import carrier_lines_id

TELNA_KEY = "carrier-lines-telna-key"
KEYS = SecretStr("operator:carrier-lines-op,service:carrier-lines-svc")
KEEP_SECONDS = 4.0
VIEWS = 6


class CountingTransport(httpx.AsyncBaseTransport):
    """Sends through ``inner`` and counts the package reads (``find_lines``)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.reads = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET" and request.url.path.endswith("/pcr/packages"):
            self.reads += 1
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _settings(env: WorkflowEnvironment, tmp: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp / 'dash.db'}",
        temporal_address=env.client.service_client.config.target_host,
        task_queue=f"carrier-lines-{uuid.uuid4().hex[:8]}",
        api_keys=KEYS,
        # Nobody listens there: only the worker's client (below) reaches the carrier.
        telna=TelnaSettings(base_url=f"http://127.0.0.1:{free_port()}", api_key=SecretStr("x")),
        dashboard_carrier_cache_seconds=KEEP_SECONDS,
        worker_workflow_sandbox=True,
    )


def _seed(settings: Settings) -> tuple[str, str]:
    """An eSIM at Telna with an open balance: (ICCID, balance id)."""
    init_db(settings.database_url)
    iccid = make_iccid(f"8944{uuid.uuid4().int % 10**14:014d}")
    balance_id = f"bal_{uuid.uuid4().hex[:12]}"
    with session_scope(settings.database_url) as session:
        session.add(Esim(iccid=iccid, carrier="telna"))
        session.flush()
        session.add(
            Balance(id=balance_id, iccid=iccid, open_iccid=iccid, carrier="telna",
                    product_id="telna-compressed-600s", workflow_id=f"balance-{iccid}")
        )  # fmt: skip
    return iccid, balance_id


def _worker_reads() -> float:
    """``find_lines`` calls the worker's carrier clients have timed (its metrics)."""
    labels = {"carrier": "telna", "operation": "find_lines"}
    return REGISTRY.get_sample_value("esim_carrier_call_seconds_count", labels) or 0.0


@contextmanager
def _dashboard(settings: Settings, client: Client) -> Iterator[httpx.AsyncClient]:
    cookie, _ = auth.issue(settings, Role.service)
    with serve(create_app(settings, client=client)) as url:
        yield httpx.AsyncClient(base_url=url, cookies={auth.COOKIE: cookie}, timeout=20)


@asynccontextmanager
async def _telna_with_a_package(iccid: str, reference: str) -> AsyncIterator[tuple[str, str]]:
    """The simulator, the eSIM in its inventory with one package ordered: (URL, package)."""
    with serve(create_telna(TELNA_KEY, "secret", webhook_url=None, seed=7)) as url:
        async with httpx.AsyncClient() as http:
            added = await http.post(f"{url}/_sim/esims", json={"iccids": [iccid]})
            added.raise_for_status()
        ordering = TelnaCarrier(url, TELNA_KEY, timeout=5.0)
        try:
            line = await ordering.order(iccid, "compressed-600s", reference)
        finally:
            await ordering.aclose()
        yield url, line.line_id


async def _view(http: httpx.AsyncClient, iccid: str) -> str:
    page = await http.get(f"/dashboard/esims/{iccid}")
    assert page.status_code == 200, page.text
    return page.text


async def test_views_within_the_period_make_one_carrier_read_and_it_goes_through_the_worker(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = _settings(dev_env, tmp_path)
    iccid, balance_id = _seed(settings)
    async with _telna_with_a_package(iccid, f"{balance_id}:1") as (telna_url, package):
        counting = CountingTransport()
        carriers = metered({"telna": TelnaCarrier(telna_url, TELNA_KEY, transport=counting)})
        threads = ThreadPoolExecutor(settings.worker_activity_threads)
        with threads as executor, _dashboard(settings, dev_env.client) as http:
            async with build_worker(dev_env.client, settings, carriers, executor), http:
                metered_before = _worker_reads()
                started = time.monotonic()
                pages = [await _view(http, iccid) for _ in range(VIEWS)]
                pages += await asyncio.gather(*(_view(http, iccid) for _ in range(VIEWS)))
                within = time.monotonic() - started
                assert within < KEEP_SECONDS, f"views took {within:.1f} s: past the period"
                for page in pages:
                    assert package in page and 'id="carrier-error"' not in page
                print(f"{2 * VIEWS} views in {within:.2f} s: {counting.reads} carrier read(s)")
                assert counting.reads == 1
                assert _worker_reads() - metered_before == 1

                handle = dev_env.client.get_workflow_handle(carrier_lines_id(iccid))
                described = await handle.describe()
                assert described.workflow_type == "CarrierLinesWorkflow"
                assert described.task_queue == settings.task_queue
                assert described.status == WorkflowExecutionStatus.COMPLETED

                await asyncio.sleep(KEEP_SECONDS - (time.monotonic() - started) + 0.5)
                assert package in await _view(http, iccid)
                assert counting.reads == 2
        for client in carriers.values():
            await client.aclose()


async def test_the_carrier_shows_as_unread_when_it_or_the_worker_or_temporal_is_down(
    dev_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(carrier_lines, "WAIT_SECONDS", 1.0)
    settings = _settings(dev_env, tmp_path)
    iccid, _ = _seed(settings)
    unreachable = metered({"telna": TelnaCarrier(settings.telna.base_url, TELNA_KEY)})
    threads = ThreadPoolExecutor(settings.worker_activity_threads)
    with threads as executor, _dashboard(settings, dev_env.client) as http:
        async with build_worker(dev_env.client, settings, unreachable, executor), http:
            page = await _view(http, iccid)
    assert 'id="carrier-error"' in page and "CarrierUnavailable" in page
    described = await dev_env.client.get_workflow_handle(carrier_lines_id(iccid)).describe()
    assert described.status == WorkflowExecutionStatus.COMPLETED  # not a failed workflow
    await unreachable["telna"].aclose()

    with _dashboard(settings, dev_env.client) as http:  # no worker on the task queue
        async with http:
            page = await _view(http, iccid)
    assert 'id="carrier-error"' in page and "no worker answered within 1 s" in page
    assert "ours (balance_line)" in page
    await dev_env.client.get_workflow_handle(carrier_lines_id(iccid)).terminate("test over")

    nowhere = await Client.connect(
        f"127.0.0.1:{free_port()}", data_converter=pydantic_data_converter, lazy=True
    )
    with _dashboard(settings, nowhere) as http:
        async with http:
            page = await _view(http, iccid)
    assert 'id="carrier-error"' in page and "Temporal is unreachable" in page
