"""An end-to-end rig: dev server, the Telna-, Webbing- and eSIM Go-like simulators and the
API over real HTTP, a worker.

Each test gets a fresh SQLite database and task queue; the simulators and the API run
under uvicorn in background threads; the worker runs in the test's event loop, and the
usage poller's Schedule (rig-prefixed id, every 2 s) is created for it and deleted after.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr
from sqlmodel import select
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, ScheduleActionExecutionStartWorkflow, WorkflowHandle
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.app import create_app as create_api
from bench.purchases import made_twice, package_lines
from carriers.esimgo import EsimGoCarrier
from carriers.metered import metered
from carriers.telna import TelnaCarrier
from carriers.webbing import WebbingCarrier
from config import EsimGoSettings, Settings, TelnaSettings, WebbingSettings
from models.audit import AuditInput, AuditReport
from models.db import init_db, session_scope
from models.identifiers import make_iccid
from models.payloads import ActionRequest, BalanceStatusView, Policy
from models.tables import BalanceLine, LineEvent, Product
from services.catalog import sync_catalogue
from services.enrolment import EnrolRequest, enrol, workflow_id
from simulators.esimgo import create_app as create_esimgo
from simulators.telna import create_app as create_telna
from simulators.webbing import create_app as create_webbing
from tests.replay import replay_failures
from tests.servers import serve
from worker import build_worker
from workflows.audit import AuditWorkflow
from workflows.balance import BalanceWorkflow
from workflows.usage_poll import ensure_usage_poll_schedules

API_KEY = "telna-test-key"
WEBHOOK_SECRET = "telna-test-webhook-secret"
OPERATOR_KEY = "operator-test-key"
SERVICE_KEY = "service-test-key"
WEBBING = ("rig-user", "rig-password", "rig-wskey")
ESIMGO_KEY = "esimgo-test-key"
ENDED = {"expired", "exhausted", "cancelled"}
# The rig's usage poller runs this often (production: 60 s).
USAGE_POLL_SECONDS = 2.0
# The same compressed passes at every carrier, by their own ids.
PRODUCTS = {
    "telna": {
        name: f"telna-{name}"
        for name in (
            "compressed-10s",
            "compressed-10s-manual",
            "compressed-30s",
            "compressed-30s-manual",
            "compressed-60s",
            "compressed-60s-manual",
            "compressed-600s",
        )
    }
    | {"compressed-10s-utc": "telna-compressed-10s-utc"},
    "webbing": {
        "compressed-10s": "webbing-9010",
        "compressed-30s": "webbing-9030",
        "compressed-60s": "webbing-9060",
        "compressed-600s": "webbing-9600",
        "compressed-10s-utc": "webbing-9110",
    },
    # eSIM Go's compressed bundles: 100 kB a second of validity.
    "esimgo": {f"compressed-{s}s": f"esimgo-esim_{s // 10}MB_{s}S_SIM" for s in (10, 30, 60, 600)},
}
# What a ``mixed`` fleet alternates over, unless the rig is given its own.
MIXED = ("telna", "webbing")
ALL_CARRIERS = ("telna", "webbing", "esimgo")


def iccids(n: int, start: int = 0) -> list[str]:
    base = uuid.uuid4().int % 10**8
    return [make_iccid(f"8944{base:08d}{start + i:06d}") for i in range(n)]


@dataclass
class Rig:
    """``carrier`` is where new eSIMs go: ``telna``, ``webbing``, ``esimgo``, or ``mixed``
    (alternating over ``mixed``'s carriers)."""

    client: Client
    settings: Settings
    sims: dict[str, str]
    api_url: str
    http: httpx.AsyncClient
    carrier: str = "telna"
    carrier_of: dict[str, str] = field(default_factory=dict)
    usage_poll_schedules: list[str] = field(default_factory=list)
    mixed: tuple[str, ...] = MIXED

    @property
    def sim_url(self) -> str:
        """The simulator of the rig's carrier (Telna's for a mixed fleet)."""
        return self.sims["telna" if self.carrier == "mixed" else self.carrier]

    def _sim(self, iccid: str) -> str:
        return self.sims[self.carrier_of.get(iccid, "telna")]

    async def add_esims(self, *iccid: str) -> None:
        for n, one in enumerate(iccid):
            mixed = self.mixed[n % len(self.mixed)]
            self.carrier_of[one] = mixed if self.carrier == "mixed" else self.carrier
        for carrier, url in self.sims.items():
            mine = [one for one in iccid if self.carrier_of[one] == carrier]
            if mine:
                r = await self.http.post(f"{url}/_sim/esims", json={"iccids": mine})
                r.raise_for_status()
            if mine and carrier == "esimgo":
                # On a device: eSIM Go may take back an eSIM never installed once its
                # last bundle is revoked (tests mark one not installed to see that rule).
                await self.esimgo_installed(*mine)

    async def esimgo_installed(self, *iccid: str, installed: bool = True) -> None:
        """Mark eSIM Go eSIMs installed on a device, or on none (``/_sim/esimgo/installed``)."""
        body = {"iccids": list(iccid), "installed": installed}
        r = await self.http.post(f"{self.sims['esimgo']}/_sim/esimgo/installed", json=body)
        r.raise_for_status()

    async def esimgo_account(self, **knobs: Any) -> dict[str, Any]:
        """Set eSIM Go's account knobs (``/_sim/esimgo``); returns the account as it stands."""
        r = await self.http.post(f"{self.sims['esimgo']}/_sim/esimgo", json=knobs)
        r.raise_for_status()
        account: dict[str, Any] = r.json()
        return account

    async def faults(self, **faults: Any) -> dict[str, int]:
        """The same faults at every carrier; returns the faults injected so far, summed."""
        injected: dict[str, int] = {}
        for url in self.sims.values():
            (await self.http.post(f"{url}/_sim/faults", json=faults)).raise_for_status()
            report = (await self.http.get(f"{url}/_sim/faults")).json()
            for kind, count in report["injected"].items():
                injected[kind] = injected.get(kind, 0) + count
        return injected

    async def traffic(self, iccid: str, bytes_per_second: float) -> None:
        body = {"iccid": iccid, "bytes_per_second": bytes_per_second}
        r = await self.http.post(f"{self._sim(iccid)}/_sim/traffic", json=body)
        r.raise_for_status()

    async def poll_usage(self) -> None:
        """Start a usage poll of every polled carrier now, besides the schedule's."""
        for schedule_id in self.usage_poll_schedules:
            await self.client.get_schedule_handle(schedule_id).trigger()

    async def usage_polls(self) -> int:
        """Polls the rig's usage poll schedules have started so far."""
        total = 0
        for schedule_id in self.usage_poll_schedules:
            description = await self.client.get_schedule_handle(schedule_id).describe()
            total += description.info.num_actions
        return total

    async def ledger(self, iccid: str | None = None) -> list[dict[str, Any]]:
        """The carrier's ledger for ``iccid``, or every carrier's ledger."""
        urls = [self._sim(iccid)] if iccid else list(self.sims.values())
        entries: list[dict[str, Any]] = []
        for url in urls:
            params = {"iccid": iccid} if iccid else {}
            r = await self.http.get(f"{url}/_sim/ledger", params=params)
            r.raise_for_status()
            entries += r.json()["entries"]
        return entries

    async def timeline(self, iccid: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self._sim(iccid)}/_sim/timeline/{iccid}")
        r.raise_for_status()
        intervals: list[dict[str, Any]] = r.json()["intervals"]
        return intervals

    def product(self, iccid: str, name: str) -> str:
        """Our product id of a compressed pass (``compressed-10s``) at the eSIM's carrier."""
        return PRODUCTS[self.carrier_of.get(iccid, "telna")].get(name, name)

    async def enrol(
        self,
        iccid: str,
        product_id: str,
        lines: int | None = None,
        policy: Policy | None = None,
        customer_ref: str | None = None,
    ) -> WorkflowHandle[Any, Any]:
        """Enrol on ``product_id``: a compressed pass's name, or our full product id."""
        carrier = self.carrier_of.get(iccid, "telna")
        if product_id.startswith("telna-") and carrier == "telna":
            product_id = product_id.removeprefix("telna-")
        req = EnrolRequest(
            iccid=iccid,
            carrier=carrier,
            product_id=self.product(iccid, product_id),
            lines=lines,
            policy=policy,
            customer_ref=customer_ref,
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
        status = await self._status_if_answered(iccid)
        while status is None or not check(status):
            if time.monotonic() > deadline:
                runs = await self.runs(iccid)
                raise AssertionError(
                    f"{iccid}: timed out waiting for {what}; last {status}; runs {runs}"
                )
            await asyncio.sleep(0.25)
            status = await self._status_if_answered(iccid)
        return status

    async def runs(self, iccid: str) -> list[str]:
        """Each run of the balance's workflow, newest first: its status, then its
        history's event types in order (what a timed-out wait shows), a failed workflow
        task with its cause and message."""
        described = []
        async for run in self.client.list_workflows(f'WorkflowId="{workflow_id(iccid)}"'):
            handle = self.client.get_workflow_handle(run.id, run_id=run.run_id)
            history = await handle.fetch_history()
            kinds = [event_text(event) for event in history.events]
            described.append(f"{run.run_id} {run.status and run.status.name}: {' '.join(kinds)}")
        return described

    async def _status_if_answered(self, iccid: str) -> BalanceStatusView | None:
        """The status, or None when the query went unanswered: a query waits for a worker,
        and just after one is killed the server may give up on it (``context canceled``)
        before another worker has taken the balance over."""
        try:
            return await self.status(iccid)
        except RPCError as error:
            if error.status not in (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED):
                raise
            return None

    async def signal(self, iccid: str, name: str) -> None:
        handle = self.client.get_workflow_handle(workflow_id(iccid))
        await handle.signal(name, ActionRequest(actor="test"))

    async def audit(self, **options: Any) -> AuditReport:
        """Run one audit now (what the ``audit`` schedule starts), wait for its report."""
        return await self.client.execute_workflow(
            AuditWorkflow.run,
            AuditInput(**options),
            id=f"audit-{uuid.uuid4().hex[:8]}",
            task_queue=self.settings.task_queue,
        )

    async def cancel_and_wait(self, *iccid: str) -> None:
        for one in iccid:
            await self.signal(one, "cancel")
        for one in iccid:
            await self.client.get_workflow_handle(workflow_id(one)).result()

    async def purchases_made_twice(self, *iccid: str) -> list[str]:
        """Invariant 1 on these eSIMs, once their balances have settled: each order at
        the carrier is the package of one line of ours (``bench.purchases``)."""
        with session_scope(self.settings.database_url) as session:
            query = select(BalanceLine).where(BalanceLine.iccid.in_(iccid))  # type: ignore[attr-defined]
            lines = session.exec(query).all()
        return made_twice(await self.ledger(), lines, set(iccid))

    async def assert_database_matches_carrier(self, *iccid: str) -> None:
        """Every order at the carrier is a line in the database with the same package, and
        every carrier action on it is an event in our ledger — and the reverse."""
        for one in iccid:
            entries = await self.ledger(one)
            with session_scope(self.settings.database_url) as session:
                lines = session.exec(select(BalanceLine).where(BalanceLine.iccid == one)).all()
                in_place = set(
                    session.exec(select(Product.id).where(Product.rotation == "in_place")).all()
                )
                events = session.exec(
                    select(LineEvent).where(
                        LineEvent.balance_id.in_({line.balance_id for line in lines})  # type: ignore[attr-defined]
                    )
                ).all()
            assert not made_twice(entries, lines, {one}), made_twice(entries, lines, {one})
            by_package = package_lines(entries, lines)
            orders = [e for e in entries if e["action"] == "order"]
            ordered = sorted(by_package[e["package_id"]].seq for e in orders)
            # In place, a change is bought only when it takes effect: one withdrawn by a
            # suspension before then (a cancel within Webbing's latency) was never bought.
            held = sorted(
                line.seq
                for line in lines
                if line.activated_at or (line.carrier_line_id and line.product_id not in in_place)
            )
            assert ordered == held, (one, ordered, held)
            for entry in orders:  # the reference, where the carrier kept it
                line = by_package[entry["package_id"]]
                assert entry["reference"] in (None, line.reference), (entry, line.reference)
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

    async def assert_histories_replay(self, *iccid: str, keep: Path | None = None) -> None:
        """Every run of these balances replays against today's code (tests/replay.py)."""
        ids = " OR ".join(f"WorkflowId = '{workflow_id(one)}'" for one in iccid)
        failed = await replay_failures(self.client, ids, keep)
        assert not failed, (failed, keep)


async def _drop_schedules(client: Client, schedule_ids: list[str]) -> None:
    """Delete the rig's schedules and end their running polls, whose task queue goes."""
    for schedule_id in schedule_ids:
        handle = client.get_schedule_handle(schedule_id)
        running = (await handle.describe()).info.running_actions
        await handle.delete()
        for action in running:
            if isinstance(action, ScheduleActionExecutionStartWorkflow):
                with contextlib.suppress(RPCError):
                    await client.get_workflow_handle(action.workflow_id).terminate("rig closed")


def none_seconds(intervals: list[dict[str, Any]], until: datetime | None = None) -> float:
    """Seconds without any active line in the carrier's timeline (before ``until``)."""
    return state_seconds(intervals, "none", until)


def state_seconds(
    intervals: list[dict[str, Any]], state: str, until: datetime | None = None
) -> float:
    """Seconds in ``state`` (``none``, ``throttled``, ``high_speed``) before ``until``."""
    total = 0.0
    now = datetime.now(UTC)
    for interval in intervals:
        if interval["state"] != state:
            continue
        start = datetime.fromisoformat(interval["start"])
        end = datetime.fromisoformat(interval["end"]) if interval["end"] else now
        if until is not None:
            end = min(end, until)
        total += max(0.0, (end - start).total_seconds())
    return total


@asynccontextmanager
async def rig(
    env: WorkflowEnvironment,
    tmp: Path,
    seed: int = 7,
    database_url: str | None = None,
    carrier: str = "telna",
    carrier_timeout: float = 5.0,
    in_doubt_seconds: float = 60.0,
    mixed: tuple[str, ...] = MIXED,
    esimgo_refund_to_balance: bool = False,
) -> AsyncIterator[Rig]:
    """The rig on ``database_url`` (the ``database_url`` fixture), else a SQLite file in tmp;
    every carrier's simulator runs, new eSIMs go to ``carrier`` (a ``mixed`` fleet
    alternates over ``mixed``), and the worker's carrier clients give up after
    ``carrier_timeout`` and hold an unanswered order ``in_doubt_seconds``; eSIM Go's
    client asks revokes to refund to the balance with ``esimgo_refund_to_balance``."""
    target = env.client.service_client.config.target_host
    username, password, wskey = WEBBING
    settings = Settings(
        database_url=database_url or f"sqlite:///{tmp / 'balance.db'}",
        temporal_address=target,
        task_queue=f"esim-balance-{uuid.uuid4().hex[:8]}",
        usage_poll_interval_seconds=USAGE_POLL_SECONDS,
        worker_workflow_sandbox=True,  # the guard against a non-deterministic call
        api_keys=SecretStr(f"operator:{OPERATOR_KEY},service:{SERVICE_KEY}"),
        telna=TelnaSettings(
            base_url="http://unused",
            api_key=SecretStr(API_KEY),
            webhook_secret=SecretStr(WEBHOOK_SECRET),
        ),
        webbing=WebbingSettings(
            base_url="http://unused",
            username=username,
            password=SecretStr(password),
            wskey=SecretStr(wskey),
        ),
        esimgo=EsimGoSettings(
            base_url="http://unused",
            api_key=SecretStr(ESIMGO_KEY),
            refund_to_balance=esimgo_refund_to_balance,
        ),
    )
    init_db(settings.database_url)
    with ExitStack() as stack:
        api_url = stack.enter_context(serve(create_api(settings)))
        telna_url = stack.enter_context(
            serve(
                create_telna(
                    API_KEY,
                    WEBHOOK_SECRET,
                    webhook_url=f"{api_url}/v1/carriers/telna/events",
                    seed=seed,
                )
            )
        )
        webbing_url = stack.enter_context(
            serve(create_webbing(username, password, wskey, seed=seed))
        )
        esimgo_url = stack.enter_context(
            serve(
                create_esimgo(
                    ESIMGO_KEY,
                    callback_url=f"{api_url}/v1/carriers/esimgo/events",
                    seed=seed,
                )
            )
        )
        settings.telna.base_url = telna_url
        # The simulator is the rig's SNS: the API (reading settings per request) takes
        # its certificate and visits its SubscribeURL.
        settings.telna.sns_hosts += f",{telna_url}"
        settings.webbing.base_url = webbing_url
        settings.esimgo.base_url = f"{esimgo_url}/v2.4"
        timing: dict[str, Any] = {"timeout": carrier_timeout, "in_doubt_seconds": in_doubt_seconds}
        carriers = metered(
            {
                "telna": TelnaCarrier(telna_url, API_KEY, **timing),
                "webbing": WebbingCarrier(webbing_url, username, password, wskey, **timing),
                "esimgo": EsimGoCarrier(
                    settings.esimgo.base_url,
                    ESIMGO_KEY,
                    rate_limit_per_second=settings.esimgo.rate_limit_per_second,
                    refund_to_balance=esimgo_refund_to_balance,
                    **timing,
                ),
            }
        )
        await sync_catalogue(carriers, settings.database_url)
        sims = {"telna": telna_url, "webbing": webbing_url, "esimgo": esimgo_url}
        with ThreadPoolExecutor(max_workers=settings.worker_activity_threads) as executor:
            worker = build_worker(env.client, settings, carriers, executor)
            async with worker, httpx.AsyncClient(timeout=10) as http:
                # Schedules are namespace-wide: the rig's own prefix keeps them apart.
                polls = await ensure_usage_poll_schedules(
                    env.client, settings, prefix=f"usage-poll-{settings.task_queue}"
                )
                r = Rig(env.client, settings, sims, api_url, http, carrier, mixed=mixed)
                r.usage_poll_schedules = polls
                try:
                    yield r
                finally:
                    await _drop_schedules(env.client, polls)
        for client in carriers.values():
            await client.aclose()


def event_text(event: HistoryEvent) -> str:
    """An event's type; a failed workflow task's also says why (its cause and message)."""
    kind = EventType.Name(event.event_type)[11:]
    if not event.HasField("workflow_task_failed_event_attributes"):
        return kind
    failed = event.workflow_task_failed_event_attributes
    cause = WorkflowTaskFailedCause.Name(failed.cause).removeprefix("WORKFLOW_TASK_FAILED_CAUSE_")
    return f"{kind}({cause}: {failed.failure.message[:300]!r})"
