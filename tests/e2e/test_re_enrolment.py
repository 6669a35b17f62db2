"""A balance enrolled again after its workflow was terminated by hand continues where it
stood: the new run takes its lines, last seq and ledger numbering from the database and
the carrier, and buys nothing twice, even at a carrier that lists only an eSIM's recent
packages. Through the API and the command line, with ``temporal workflow terminate``."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlmodel import select
from temporalio.testing import WorkflowEnvironment

from models.db import session_scope
from models.payloads import BalanceStatusView, Policy
from models.tables import BalanceLine, LineEvent
from services.enrolment import workflow_id
from tests.e2e.harness import OPERATOR_KEY, Rig, iccids, none_seconds, rig
from tests.e2e.test_enrolment import _starter

FAST = Policy(lead_seconds=5, margin_seconds=3)
TEMPORAL = str(Path(sys.executable).parent / "temporal")


def terminate(r: Rig, iccid: str) -> None:
    """What an operator does to a stuck workflow, from the Temporal CLI."""
    done = subprocess.run(
        [
            TEMPORAL,
            "workflow",
            "terminate",
            "--workflow-id",
            workflow_id(iccid),
            "--address",
            r.settings.temporal_address,
            "--reason",
            "stuck, says the operator",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr


def event_numbers(r: Rig, balance_id: str) -> list[int]:
    with session_scope(r.settings.database_url) as session:
        keys = session.exec(select(LineEvent.key).where(LineEvent.balance_id == balance_id)).all()
    return sorted(int(m.group(1)) for k in keys if (m := re.fullmatch(r".+:(\d+)", k)))


async def test_a_balance_enrolled_again_after_terminate_continues_and_buys_nothing_twice(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path, carrier="mixed") as r:
        # The command line's eSIM at Telna (it holds an ordered line before its switch),
        # the API's at Webbing (nothing is bought ahead there).
        by_cli, by_api = fleet = iccids(2)
        await r.add_esims(*fleet)
        for url in r.sims.values():  # only each eSIM's two newest packages are listed
            (await r.http.post(f"{url}/_sim/config", json={"list_limit": 2})).raise_for_status()
        headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        body = {
            "iccid": by_api,
            "product_id": r.product(by_api, "compressed-10s"),
            "policy": FAST.model_dump(exclude_none=True),
        }
        esim = {"iccid": by_api, "carrier": r.carrier_of[by_api]}
        assert (await r.http.post(f"{r.api_url}/v1/esims", json=esim, headers=headers)).is_success
        created = await r.http.post(f"{r.api_url}/v1/balances", json=body, headers=headers)
        assert created.status_code == 201, created.text
        balance_id = {by_api: created.json()["id"]}
        cli = ("enroll", "--carrier", r.carrier_of[by_cli], "--iccid", by_cli)
        cli += ("--product", r.product(by_cli, "compressed-10s"))
        first = _starter(r, *cli)
        assert first.returncode == 0, first.stderr
        balance_id[by_cli] = first.stdout.split()[0]

        # Past three lines, then terminated: by the API one asleep until its next order,
        # by the command line one holding an ordered line for its switch.
        moments: dict[str, Callable[[BalanceStatusView], bool]] = {
            by_api: lambda s: s.rotations >= 3 and s.scheduled is None,
            by_cli: lambda s: s.rotations >= 3 and s.scheduled is not None,
        }
        before: dict[str, BalanceStatusView] = {}
        for iccid, moment in moments.items():
            before[iccid] = await r.wait_for(iccid, moment, 90, "the moment to terminate")
            terminate(r, iccid)
            if iccid == by_cli:
                # Enrolled again only once the active line has ended: the carrier ends it
                # and starts the one queued while no workflow runs, and the new run must
                # write both (the database and the ledger agree with the carrier).
                active = before[iccid].active
                assert active is not None and active.ends_at is not None
                await asyncio.sleep(
                    max(0.0, (active.ends_at - datetime.now(UTC)).total_seconds() + 1)
                )
            if iccid == by_api:
                again = await r.http.post(f"{r.api_url}/v1/balances", json=body, headers=headers)
                assert again.status_code == 200, again.text
                assert again.json()["id"] == balance_id[iccid]
            else:
                again_cli = _starter(r, *cli)
                assert again_cli.returncode == 0, again_cli.stderr
                assert again_cli.stdout.split()[0] == balance_id[iccid]
                assert "already enrolled" in again_cli.stdout

        for iccid, was in before.items():
            assert was.active is not None
            now = await r.wait_for(
                iccid,
                lambda s, seq=was.active.seq: s.active is not None and s.active.seq >= seq + 3,
                60,
                "two more rotations after the restore",
            )
            assert now.rotations >= was.rotations, (now, was)
        stopped_at = datetime.now(UTC)
        await r.cancel_and_wait(*fleet)

        assert await r.purchases_made_twice(*fleet) == []
        for iccid in fleet:
            orders = {e["package_id"] for e in await r.ledger(iccid) if e["action"] == "order"}
            with session_scope(r.settings.database_url) as session:
                lines = session.exec(
                    select(BalanceLine).where(BalanceLine.balance_id == balance_id[iccid])
                ).all()
                kinds = session.exec(
                    select(LineEvent.kind).where(LineEvent.balance_id == balance_id[iccid])
                ).all()
            # Each order the package of one line; their seqs 1..n: no seq bought again.
            seqs = sorted(line.seq for line in lines if line.carrier_line_id in orders)
            assert orders and seqs == list(range(1, len(seqs) + 1)), seqs
            numbers = event_numbers(r, balance_id[iccid])
            assert numbers == list(range(1, len(numbers) + 1)), numbers  # nothing dropped
            assert "restored" in kinds
            assert none_seconds(await r.timeline(iccid), until=stopped_at) == 0, iccid
        await r.assert_database_matches_carrier(*fleet)
