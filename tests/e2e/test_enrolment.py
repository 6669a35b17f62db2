"""Enrolment is idempotent per ICCID; bad input is one clear line and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from sqlmodel import func, select
from temporalio.testing import WorkflowEnvironment

from models.db import session_scope
from models.tables import Balance, BalanceLine, Esim, LineEvent
from services.enrolment import workflow_id
from tests.e2e.harness import Rig, iccids, rig

ROOT = Path(__file__).resolve().parents[2]


def _counts(url: str) -> tuple[int, ...]:
    with session_scope(url) as session:
        return tuple(
            session.exec(select(func.count()).select_from(table)).one()
            for table in (Esim, Balance, BalanceLine, LineEvent)
        )


def _starter(r: Rig, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": r.settings.database_url,
        "TEMPORAL_ADDRESS": r.settings.temporal_address,
        "TASK_QUEUE": r.settings.task_queue,
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "starter.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


async def _workflow_count(r: Rig, iccid: str) -> int:
    """Chains of runs under the eSIM's workflow id: its runs that did not continue as new
    (one, the run of the moment, for a balance started once)."""
    query = f"WorkflowId = '{workflow_id(iccid)}' AND ExecutionStatus != 'ContinuedAsNew'"
    count = 0
    for _ in range(40):  # visibility is eventually consistent
        count = (await r.client.count_workflows(query)).count
        if count == 1:
            break
        await asyncio.sleep(0.25)
    return count


async def test_enrolling_the_same_iccid_twice_starts_one_workflow(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await asyncio.gather(*(r.enrol(iccid, "telna-compressed-60s") for _ in range(3)))
        again = _starter(
            r, "enroll", "--carrier", "telna", "--iccid", iccid, "--product", "telna-compressed-60s"
        )
        assert again.returncode == 0, again.stderr
        assert "already enrolled" in again.stdout
        await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        with session_scope(r.settings.database_url) as session:
            balances = session.exec(select(Balance).where(Balance.iccid == iccid)).all()
        assert len(balances) == 1
        assert again.stdout.split()[0] == balances[0].id
        assert await _workflow_count(r, iccid) == 1
        orders = [e for e in await r.ledger(iccid) if e["action"] == "order"]
        assert len(orders) == 1
        await r.cancel_and_wait(iccid)
        await r.assert_database_matches_carrier(iccid)


async def test_bad_input_is_one_clear_line_and_changes_nothing(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        good, bad_luhn = iccids(2)
        bad_luhn = bad_luhn[:-1] + str((int(bad_luhn[-1]) + 1) % 10)
        before = _counts(r.settings.database_url)
        cases = [
            (("--iccid", bad_luhn, "--product", "telna-compressed-60s"), "Luhn"),
            (("--iccid", good, "--product", "telna-no-such-pass"), "unknown product"),
            (("--iccid", good, "--product", "telna-compressed-60s", "--lines", "0"), "lines"),
            (("--iccid", good[:10], "--product", "telna-compressed-60s"), "19 or 20 digits"),
        ]
        for args, why in cases:
            done = _starter(r, "enroll", "--carrier", "telna", *args)
            assert done.returncode == 1, (args, done.stdout, done.stderr)
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error: ") and why in lines[0], lines
            assert done.stdout == ""
        assert _counts(r.settings.database_url) == before
        assert await r.ledger() == []

        await r.add_esims(good)
        sheet = tmp_path / "fleet.csv"
        sheet.write_text(
            "iccid,carrier,product_id,lines\n"
            f"{bad_luhn},telna,telna-compressed-60s,\n"
            f"{good},telna,telna-compressed-60s,2\n"
            f"{good[:-3]},telna,telna-no-such-pass\n"
            "just-one-cell\n"
            f"{good},telna,telna-compressed-60s,not-a-number\n"
        )
        done = _starter(r, "enroll", "--csv", str(sheet))
        assert done.returncode == 1
        errors = done.stderr.strip().splitlines()
        assert [e.split(":")[0:2] for e in errors] == [
            ["error", " line 2"],
            ["error", " line 4"],
            ["error", " line 5"],
            ["error", " line 6"],
        ], errors
        assert done.stdout.split()[0] == good
        with session_scope(r.settings.database_url) as session:
            assert session.exec(select(func.count()).select_from(Balance)).one() == 1
            assert session.exec(select(func.count()).select_from(Esim)).one() == 1
        await r.wait_for(good, lambda s: s.active is not None, 30, "first line")
        await r.cancel_and_wait(good)
        await r.assert_database_matches_carrier(good)


async def test_the_command_line_names_a_customer_and_status_says_what_the_balance_cost(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path) as r:
        one, two = iccids(2)
        await r.add_esims(one, two)
        flagged = _starter(
            r,
            "enroll",
            *("--carrier", "telna", "--iccid", one, "--product", "telna-compressed-10s"),
            *("--customer-ref", "ACME-1"),
        )
        assert flagged.returncode == 0, flagged.stderr
        sheet = tmp_path / "customers.csv"
        sheet.write_text(
            f"iccid,carrier,product_id,customer_ref\n{two},telna,telna-compressed-10s,GLOBEX\n"
        )
        listed = _starter(r, "enroll", "--csv", str(sheet))
        assert listed.returncode == 0, listed.stderr
        with session_scope(r.settings.database_url) as session:
            refs = {b.iccid: b.customer_ref for b in session.exec(select(Balance))}
            esims = {e.iccid: e.customer_ref for e in session.exec(select(Esim))}
        assert refs == esims == {one: "ACME-1", two: "GLOBEX"}
        await r.wait_for(one, lambda s: s.rotations >= 1, 30, "a rotation")
        # In a thread: the worker answering the query runs in this event loop.
        status = await asyncio.to_thread(_starter, r, "status", one)
        assert status.returncode == 0, status.stderr
        [usd] = json.loads(status.stdout)["ledger_spend"]
        orders = [e for e in await r.ledger(one) if e["action"] == "order"]
        assert usd["currency"] == "USD" and usd["unpriced_lines"] == 0
        # Every line bought by the time of the status read; one more may have been since.
        assert usd["lines"] in (len(orders), len(orders) - 1)
        assert usd["amount_cents"] == sum(e["price_cents"] for e in orders[: usd["lines"]])
        await r.cancel_and_wait(one, two)
