"""The README's List Filters find the balances they say, on the real dev server.

Each balance here is a real workflow execution (under the type name BalanceWorkflow, on a
task queue of its own) whose runs carry the search attributes a balance's runs carry:
earlier runs closed by continue-as-new with the values they ended with, the last one
running or closed. The expected answer of each query is worked out from those rows in
Python, independently of the query text.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from models import search
from models.identifiers import make_iccid

pytestmark = pytest.mark.timeout(120)

README = Path(__file__).resolve().parent.parent / "README.md"
ROW = re.compile(r"^\| (?P<label>[^|]+?) \| `(?P<query>.+)` \|$")
NOW = datetime.now(UTC).replace(microsecond=0)


def readme_filters() -> dict[str, str]:
    """The README's List Filters between the ``list-filters`` markers, by label."""
    text = README.read_text()
    block = text.split("<!-- list-filters -->")[1].split("<!-- /list-filters -->")[0]
    return {m["label"]: m["query"] for line in block.splitlines() if (m := ROW.match(line))}


class RunSpec(BaseModel):
    """The search attributes one run of a balance carries."""

    state: str
    seq: int
    ends_at: datetime


class BalanceSpec(BaseModel):
    iccid: str
    carrier: str
    product_id: str
    runs: list[RunSpec]  # oldest first
    closed: bool = False  # the last run completes (else it keeps running)


def attributes(spec: BalanceSpec, run: RunSpec) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(search.BALANCE_STATE, run.state),
            SearchAttributePair(search.ICCID, spec.iccid),
            SearchAttributePair(search.CARRIER, spec.carrier),
            SearchAttributePair(search.PRODUCT_ID, spec.product_id),
            SearchAttributePair(search.LINE_SEQ, run.seq),
            SearchAttributePair(search.LINE_ENDS_AT, run.ends_at),
        ]
    )


@workflow.defn(name="BalanceWorkflow", sandboxed=False)
class BalanceRuns:
    """Lives through the given runs: continues as new into each next one, then stays
    running or completes."""

    @workflow.run
    async def run(self, spec: BalanceSpec) -> None:
        if len(spec.runs) > 1:
            rest = spec.model_copy(update={"runs": spec.runs[1:]})
            workflow.continue_as_new(rest, search_attributes=attributes(rest, rest.runs[0]))
        if not spec.closed:
            await workflow.wait_condition(lambda: False)


def iccid() -> str:
    return make_iccid("8944" + "".join(random.choices("0123456789", k=14)))


def run(state: str, seq: int, minutes: float) -> RunSpec:
    return RunSpec(state=state, seq=seq, ends_at=NOW + timedelta(minutes=minutes))


def fleet() -> dict[str, BalanceSpec]:
    """Balances whose runs cover every query's yes and no."""
    t30, t1g, w30, w1g = "telna-compressed-30s", "telna-daily-1gb", "webbing-9030", "webbing-1042"
    specs = {
        "telna soon": ("telna", t30, [run("Active", 1, 10)], False),
        "telna failing": ("telna", t1g, [run("Active", 4, 300), run("Failing", 5, 30)], False),
        "telna recovered": ("telna", t30, [run("Failing", 2, 120), run("Active", 3, 45)], False),
        "telna long-lived": ("telna", t1g, [run("Active", 101, 180)], False),
        "telna lapsed": ("telna", t30, [run("Active", 9, -10)], False),
        "telna next hour out": ("telna", t30, [run("Active", 2, 61)], False),
        "telna throttled": ("telna", t30, [run("Throttled", 7, 50)], False),
        "telna paused": ("telna", t1g, [run("Active", 2, 300), run("Paused", 2, 20)], False),
        "webbing active": ("webbing", w1g, [run("Active", 1, 20)], False),
        "webbing failing": ("webbing", w30, [run("Failing", 150, 15)], False),
        "webbing paused": ("webbing", w1g, [run("Paused", 3, -60)], False),
        "telna cancelled": ("telna", t30, [run("Active", 1, 5), run("Cancelled", 1, 5)], True),
        "webbing completed": ("webbing", w1g, [run("Completed", 2, -10)], True),
    }
    return {
        name: BalanceSpec(iccid=iccid(), carrier=c, product_id=p, runs=runs, closed=closed)
        for name, (c, p, runs, closed) in specs.items()
    }


@dataclass(frozen=True)
class Row:
    """One run as visibility lists it."""

    workflow_id: str
    iccid: str
    carrier: str
    product_id: str
    state: str
    seq: int
    ends_at: datetime
    status: str  # Running, ContinuedAsNew, Completed


def rows(balances: dict[str, BalanceSpec]) -> list[Row]:
    out = []
    for spec in balances.values():
        for n, r in enumerate(spec.runs, start=1):
            last = n == len(spec.runs)
            status = "ContinuedAsNew" if not last else "Completed" if spec.closed else "Running"
            out.append(
                Row(
                    f"balance-{spec.iccid}",
                    spec.iccid,
                    spec.carrier,
                    spec.product_id,
                    r.state,
                    r.seq,
                    r.ends_at,
                    status,
                )
            )
    return out


def expectations(chosen_iccid: str) -> dict[str, Callable[[Row], bool]]:
    """What each README List Filter should find, by its label."""

    def running(r: Row) -> bool:
        return r.status == "Running"

    return {
        "balances failing now": lambda r: running(r) and r.state == "Failing",
        "balances throttled by their cost cap": lambda r: running(r) and r.state == "Throttled",
        "balances paused by an operator": lambda r: running(r) and r.state == "Paused",
        "open balances on Webbing": lambda r: running(r) and r.carrier == "webbing",
        "open balances on one product": lambda r: (
            running(r) and r.product_id == "telna-compressed-30s"
        ),
        "lines ending in the next hour on Telna": lambda r: (
            running(r)
            and r.carrier == "telna"
            and r.state != "Paused"
            and NOW <= r.ends_at <= NOW + timedelta(hours=1)
        ),
        "balances past their 100th line": lambda r: running(r) and r.seq > 100,
        "balances that ended (cancelled or term complete)": lambda r: (
            r.state in ("Cancelled", "Completed")
        ),
        "every run of one eSIM's balances, newest first": lambda r: r.iccid == chosen_iccid,
    }


def concrete(query: str, chosen_iccid: str) -> str:
    """The README query with its placeholders filled in."""
    iso = "%Y-%m-%dT%H:%M:%SZ"
    return (
        query.replace("<now + 1h>", f"{NOW + timedelta(hours=1):{iso}}")
        .replace("<now>", f"{NOW:{iso}}")
        .replace("<ICCID>", chosen_iccid)
    )


async def listed(client: Client, query: str) -> list[str]:
    return sorted([w.id async for w in client.list_workflows(query)])


async def wait_until_listed(client: Client, query: str, count: int) -> None:
    """Visibility is eventually consistent: wait until every run is listed."""
    deadline = asyncio.get_running_loop().time() + 30
    while (await client.count_workflows(query)).count != count:
        assert asyncio.get_running_loop().time() < deadline, f"{query} never listed {count}"
        await asyncio.sleep(0.2)


async def test_readme_list_filters_find_the_balances_they_say(dev_env: WorkflowEnvironment) -> None:
    client = dev_env.client
    queue = f"list-filters-{uuid.uuid4()}"
    balances = fleet()
    chosen = balances["telna failing"].iccid
    expected_by = expectations(chosen)
    filters = readme_filters()
    assert set(filters) == set(expected_by), "README List Filters and this test disagree"
    every_row = rows(balances)

    async with Worker(client, task_queue=queue, workflows=[BalanceRuns]):
        for spec in balances.values():
            await client.start_workflow(
                BalanceRuns.run,
                spec,
                id=f"balance-{spec.iccid}",
                task_queue=queue,
                search_attributes=attributes(spec, spec.runs[0]),
            )
        try:
            await wait_until_listed(client, f"TaskQueue = '{queue}'", len(every_row))
            closed = sum(r.status != "Running" for r in every_row)
            await wait_until_listed(
                client, f"TaskQueue = '{queue}' AND ExecutionStatus != 'Running'", closed
            )
            for label, query in filters.items():
                expected = sorted(r.workflow_id for r in every_row if expected_by[label](r))
                scoped = f"({concrete(query, chosen)}) AND TaskQueue = '{queue}'"

                found = await listed(client, scoped)
                counted = (await client.count_workflows(scoped)).count

                assert 0 < len(expected) < len(every_row), label  # the query tells apart
                assert found == expected, f"{label}: {query}"
                assert counted == len(expected), label
        finally:
            for spec in balances.values():
                if not spec.closed:
                    await client.get_workflow_handle(f"balance-{spec.iccid}").terminate()
