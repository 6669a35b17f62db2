"""Records the BalanceWorkflow histories that tests/workflows/test_replay.py replays.

    .venv/bin/python -m tests.workflows.record_histories

Runs short real scenarios (compressed passes of 10-60 s) on the Temporal dev server with
the e2e rig (both simulators and the API over HTTP, an in-process worker) and writes one
JSON file per workflow run, ``WorkflowHistory.to_json()``, to
``tests/workflows/histories/{scenario}-{n}.json``: every run of the chain, the first and
each continue-as-new run, numbered from 1. Files of a scenario recorded before are
removed first, so a scenario's runs are always those of one recording.

The replay test proves that the workflow code of today makes the same decisions, in the
same order, as the code that wrote those histories did; a workflow running in
production when a worker is upgraded is replayed the same way, and a difference stops it
with a non-determinism error.

When to re-record: never to make a failing replay test pass. A change that fails it
would break every workflow running at deployment. Make the change compatible instead:
put the new behaviour behind ``workflow.patched("some-change-id")`` (old histories take
the old branch, new runs the new one), keep these files, and add a recording of the new
branch beside them (a new scenario name). Re-record a scenario only when it is
deliberately incompatible and the deployment plan says how running workflows are moved
(drained, or reset); once no run older than a ``workflow.deprecate_patch`` remains, the
old branch and the histories that need it may go together.

A scenario can be recorded alone: ``... record_histories rotation-telna cancel``.
``cap-lifts`` runs on the time-skipping server instead (days of virtual time) and is
written to ``histories/virtual-clock/``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.client import Client, WorkflowHistory

from models.db import session_scope
from models.payloads import (
    ActionRequest,
    BalanceState,
    BalanceStatus,
    ChangePolicy,
    ChangeProduct,
    Policy,
)
from models.tables import Product
from services.enrolment import product_spec, workflow_id
from tests.e2e.harness import Rig, iccids, rig
from tests.fakes import FakeCarrier, running_balance
from tests.temporal_envs import dev_server, time_skipping
from tests.workflows.capped_days import PASS, capped_days
from workflows.balance import BalanceWorkflow

HISTORIES = Path(__file__).parent / "histories"
BIN = Path(sys.executable).parent
# 10 s passes with a 5 s lead and a 3 s margin: a rotation every ~7 s.
FAST = Policy(lead_seconds=5, margin_seconds=3)
# 60 s passes rotate by time only ~50 s after activation: room for operator actions.
SLOW = Policy(lead_seconds=10, margin_seconds=5)
TIMEOUT = 60.0

Scenario = Callable[[Rig, str], Awaitable[None]]


async def _add_esim(r: Rig, iccid: str, carrier: str) -> None:
    """Register ``iccid`` at ``carrier``'s simulator, whatever the rig's own carrier."""
    r.carrier_of[iccid] = carrier
    body = {"iccids": [iccid]}
    (await r.http.post(f"{r.sims[carrier]}/_sim/esims", json=body)).raise_for_status()


async def _first_line(r: Rig, iccid: str) -> None:
    await r.wait_for(iccid, lambda s: s.active is not None, TIMEOUT, "first line")


async def _rotations(r: Rig, iccid: str, n: int) -> None:
    await r.wait_for(iccid, lambda s: s.rotations >= n, TIMEOUT + 10 * n, f"{n} rotations")


async def rotation(r: Rig, iccid: str) -> None:
    """Rotation by time, twice: the first run and two continue-as-new runs."""
    await r.enrol(iccid, "compressed-10s", policy=FAST)
    await _rotations(r, iccid, 2)


async def usage_rotation(r: Rig, iccid: str) -> None:
    """Telna's usage webhooks use a 60 s pass up in ~20 s: an early rotation."""
    await r.enrol(iccid, "compressed-60s")
    await _first_line(r, iccid)
    await r.traffic(iccid, 300_000)
    await r.wait_for(iccid, lambda s: s.early_rotations >= 1, TIMEOUT, "early rotation")
    await r.traffic(iccid, 0)


async def pause_resume(r: Rig, iccid: str) -> None:
    await r.enrol(iccid, "compressed-60s", policy=SLOW)
    await _first_line(r, iccid)
    await r.signal(iccid, "pause")
    await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Paused, TIMEOUT, "Paused")
    await r.signal(iccid, "resume")
    await r.wait_for(iccid, lambda s: s.active is not None and s.active.seq == 2, TIMEOUT, "line 2")


async def rotate_now(r: Rig, iccid: str) -> None:
    await r.enrol(iccid, "compressed-60s", policy=SLOW)
    await _first_line(r, iccid)
    await r.signal(iccid, "rotate_now")
    await _rotations(r, iccid, 1)


async def change_product(r: Rig, iccid: str) -> None:
    """The ``change_product`` update, then a rotation onto the new product."""
    await r.enrol(iccid, "compressed-60s", policy=SLOW)
    await _first_line(r, iccid)
    with session_scope(r.settings.database_url) as session:
        row = session.get(Product, r.product(iccid, "compressed-30s"))
        assert row is not None
        new = product_spec(row)
    handle = r.client.get_workflow_handle_for(BalanceWorkflow.run, workflow_id(iccid))
    await handle.execute_update(BalanceWorkflow.change_product, ChangeProduct(product=new))
    await r.signal(iccid, "rotate_now")
    await _rotations(r, iccid, 1)


async def change_policy(r: Rig, iccid: str) -> None:
    """The ``change_policy`` update: a longer lead and margin bring the rotation forward."""
    await r.enrol(iccid, "compressed-30s", policy=Policy(lead_seconds=8, margin_seconds=4))
    await _first_line(r, iccid)
    handle = r.client.get_workflow_handle_for(BalanceWorkflow.run, workflow_id(iccid))
    policy = Policy(lead_seconds=20, margin_seconds=12)
    await handle.execute_update(BalanceWorkflow.change_policy, ChangePolicy(policy=policy))
    await _rotations(r, iccid, 1)


async def cancel(r: Rig, iccid: str) -> None:
    """Cancelled while the next line is ordered: both lines end at the carrier."""
    await r.enrol(iccid, "compressed-10s", policy=FAST)
    await r.wait_for(iccid, lambda s: s.scheduled is not None, TIMEOUT, "next line ordered")


async def cost_cap(r: Rig, iccid: str) -> None:
    """One line a day: traffic uses it up and the balance stays Throttled."""
    await r.enrol(iccid, "compressed-60s", policy=Policy(max_lines_per_day=1))
    await _first_line(r, iccid)
    await r.traffic(iccid, 1_000_000)
    await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Throttled, TIMEOUT, "Throttled")
    await asyncio.sleep(2)
    await r.traffic(iccid, 0)


async def outage(r: Rig, iccid: str) -> None:
    """The carrier is down from before the order moment to past the line's end: Failing,
    then a fresh line once it answers again. Faults hit every carrier of the rig, so
    this scenario runs alone."""
    await r.enrol(iccid, "compressed-10s", policy=FAST)
    first = await r.wait_for(iccid, lambda s: s.active is not None, TIMEOUT, "first line")
    assert first.active is not None and first.active.ends_at is not None
    wait = (first.active.ends_at - datetime.now(UTC)).total_seconds() - 7
    await asyncio.sleep(max(0.0, wait))
    await r.faults(outage_seconds=15)
    await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Failing, TIMEOUT, "Failing")
    await r.wait_for(
        iccid,
        lambda s: s.status == BalanceStatus.Active and s.active is not None and s.active.seq >= 2,
        TIMEOUT,
        "recovery",
    )


async def used_up_at_esimgo(r: Rig, iccid: str) -> None:
    """A heavy user uses an eSIM Go bundle up while the next waits queued: the carrier
    starts that one, and the workflow confirms it (``QUEUED_BY_CARRIER``)."""
    await r.enrol(iccid, "compressed-60s", policy=Policy(lead_seconds=50, margin_seconds=3))
    await r.wait_for(
        iccid, lambda s: s.active is not None and s.scheduled is not None, TIMEOUT, "bought ahead"
    )
    await r.traffic(iccid, 3_000_000)
    await r.wait_for(iccid, lambda s: s.early_rotations >= 1, TIMEOUT, "used up, handed over")
    await r.traffic(iccid, 0)


async def never_installed_at_esimgo(r: Rig, iccid: str) -> None:
    """An eSIM on no device never starts its first bundle: the wait for it stops for a
    pause (``ACTIVATION_YIELDS``), the bundle is left on the eSIM, and once the eSIM is
    installed a resume brings it up."""
    await r.esimgo_installed(iccid, installed=False)
    await r.enrol(iccid, "compressed-60s", policy=SLOW)
    await r.wait_for(
        iccid,
        lambda s: s.scheduled is not None and s.scheduled.line_id is not None,
        TIMEOUT,
        "line 1 bought",
    )
    await r.signal(iccid, "pause")
    await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Paused, TIMEOUT, "Paused")
    await r.esimgo_installed(iccid)
    await r.signal(iccid, "resume")
    await r.wait_for(iccid, lambda s: s.active is not None, TIMEOUT, "line 1 brought up")


# name -> (carrier, scenario); every one ends with a cancel, so its last run completes.
SCENARIOS: dict[str, tuple[str, Scenario]] = {
    "rotation-telna": ("telna", rotation),
    "rotation-webbing": ("webbing", rotation),
    "usage-rotation": ("telna", usage_rotation),
    "pause-resume": ("telna", pause_resume),
    "rotate-now": ("telna", rotate_now),
    "change-product": ("telna", change_product),
    "change-policy": ("telna", change_policy),
    "cancel": ("telna", cancel),
    "cost-cap": ("telna", cost_cap),
    "outage": ("telna", outage),
    "rotation-esimgo": ("esimgo", rotation),
    "used-up-esimgo": ("esimgo", used_up_at_esimgo),
    "never-installed-esimgo": ("esimgo", never_installed_at_esimgo),
}
# Scenarios that inject faults, run one after another once the others are done.
ALONE = {"outage"}


async def chain(client: Client, wid: str) -> list[WorkflowHistory]:
    """Every run of ``wid``, first to last, following continue-as-new."""
    handle = client.get_workflow_handle(wid)
    info = (await handle.describe()).raw_description.workflow_execution_info
    run_id: str | None = info.first_run_id or info.execution.run_id
    runs: list[WorkflowHistory] = []
    while run_id:
        history = await client.get_workflow_handle(wid, run_id=run_id).fetch_history()
        runs.append(history)
        last = history.events[-1]
        if last.HasField("workflow_execution_continued_as_new_event_attributes"):
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
        else:
            run_id = None
    return runs


def write(folder: Path, name: str, runs: list[WorkflowHistory], started: float) -> list[Path]:
    """The runs' histories as ``{folder}/{name}-{n}.json``, those of before removed."""
    folder.mkdir(exist_ok=True)
    for old in folder.glob(f"{name}-*.json"):
        old.unlink()
    paths = []
    for n, history in enumerate(runs, start=1):
        path = folder / f"{name}-{n}.json"
        path.write_text(history.to_json() + "\n")
        paths.append(path)
    size = sum(p.stat().st_size for p in paths)
    print(f"{name}: {len(runs)} runs, {size / 1000:.0f} kB, {time.monotonic() - started:.0f} s")
    return paths


async def record(r: Rig, name: str) -> list[Path]:
    """Run scenario ``name`` on a fresh eSIM, cancel it, write its runs' histories."""
    carrier, scenario = SCENARIOS[name]
    (iccid,) = iccids(1)
    await _add_esim(r, iccid, carrier)
    started = time.monotonic()
    await scenario(r, iccid)
    await r.cancel_and_wait(iccid)
    return write(HISTORIES, name, await chain(r.client, workflow_id(iccid)), started)


async def cap_lifts() -> list[Path]:
    """Three days under a spend cap on the time-skipping server (a dev server's clock
    cannot reach midnight): capped each day, the cap lifted at 00:00 UTC
    (``CAP_LIFTS_AT_MIDNIGHT``), then cancelled. Against a carrier kept in a few lines
    (tests/fakes.py): what is replayed is the workflow's commands, not the carrier's."""
    started = time.monotonic()
    state = BalanceState(
        balance_id="bal_caplifts0001",
        iccid="8944000000000000019",
        carrier="telna",
        product=PASS,
        policy=Policy(max_spend_per_day=Decimal("3.00")),
    )
    async with time_skipping() as env, running_balance(env, FakeCarrier(), state) as handle:
        await capped_days(env, handle)
        await handle.signal(BalanceWorkflow.cancel, ActionRequest(actor="recorder"))
        await handle.result()
        runs = await chain(env.client, handle.id)
    return write(VIRTUAL_CLOCK, "cap-lifts", runs, started)


# Recorded on the time-skipping server's virtual clock, into their own folder.
VIRTUAL_CLOCK = HISTORIES / "virtual-clock"
ON_VIRTUAL_CLOCK: dict[str, Callable[[], Awaitable[list[Path]]]] = {"cap-lifts": cap_lifts}


async def main(names: list[str]) -> None:
    unknown = set(names) - set(SCENARIOS) - set(ON_VIRTUAL_CLOCK)
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    names = names or [*SCENARIOS, *ON_VIRTUAL_CLOCK]
    for name in names:
        if name in ON_VIRTUAL_CLOCK:
            await ON_VIRTUAL_CLOCK[name]()
    names = [name for name in names if name in SCENARIOS]
    if not names:
        return
    HISTORIES.mkdir(exist_ok=True)
    # The outage fails carrier calls on purpose: their retries are not news here.
    logging.getLogger("temporalio.activity").setLevel(logging.ERROR)
    async with dev_server() as env:
        with tempfile.TemporaryDirectory() as tmp:
            async with rig(env, Path(tmp), carrier="mixed") as r:
                together = [name for name in names if name not in ALONE]
                await asyncio.wait_for(
                    asyncio.gather(*(record(r, name) for name in together)),
                    timedelta(minutes=5).total_seconds(),
                )
                for name in names:
                    if name in ALONE:
                        await record(r, name)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
