"""The worker's /metrics over HTTP after a real rotation: rotations, lead, gap and overlap,
carrier call latency by operation, balances by state."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families
from temporalio.testing import WorkflowEnvironment

from models.payloads import Policy
from ports import free_port
from services import metrics
from tests.e2e.harness import iccids, rig

FAST = Policy(lead_seconds=5, margin_seconds=3)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def _scrape(http: httpx.AsyncClient, url: str) -> Samples:
    response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_worker_metrics_show_a_rotation_as_it_happened(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    port = free_port()
    stop_serving = metrics.serve(port)
    assert stop_serving is not None
    url = f"http://127.0.0.1:{port}/metrics"
    stop = asyncio.Event()
    try:
        async with rig(dev_env, tmp_path) as r, httpx.AsyncClient() as http:
            watch = asyncio.create_task(metrics.watch_balances(r.settings.database_url, stop, 0.2))
            before = await _scrape(http, url)
            (iccid,) = iccids(1)
            await r.add_esims(iccid)
            # Started through the API (MANUAL): the new line comes up before the old one
            # ends, so the rotation has an overlap and a lead to show.
            await r.enrol(iccid, "telna-compressed-10s-manual", policy=FAST)
            await r.wait_for(iccid, lambda s: s.rotations >= 1, 40, "a rotation")
            await asyncio.sleep(0.5)  # one refresh of the balances gauge
            after = await _scrape(http, url)
            await r.cancel_and_wait(iccid)
            stop.set()
            await watch
    finally:
        stop_serving()

    def delta(name: str, **labels: str) -> float:
        return _get(after, name, **labels) - _get(before, name, **labels)

    telna = {"carrier": "telna"}
    assert delta("esim_rotations_total", carrier="telna", reason="time") >= 1
    rotated = delta("esim_rotation_gap_seconds_count", **telna)
    assert rotated >= 1
    assert delta("esim_rotation_gap_seconds_sum", **telna) == 0, "a gap at a rotation"
    assert delta("esim_rotation_overlap_seconds_count", **telna) == rotated
    assert delta("esim_rotation_overlap_seconds_sum", **telna) > 0
    # The next line comes up about the margin (3 s) before the old one's end: not late,
    # and less than a lead (5 s) early.
    assert delta("esim_rotation_lead_seconds_count", **telna) == rotated
    assert delta("esim_rotation_lead_seconds_bucket", le="0.0", **telna) == 0
    assert delta("esim_rotation_lead_seconds_bucket", le="5.0", **telna) == rotated
    for operation in ("order", "activate", "deactivate"):
        assert delta("esim_carrier_call_seconds_count", operation=operation, **telna) >= 1, (
            operation
        )
    # No order had left before: none looked at the carrier first.
    assert delta("esim_carrier_call_seconds_count", operation="open_lines", **telna) == 0
    calls = delta("esim_carrier_call_seconds_count", operation="activate", **telna)
    fast = delta("esim_carrier_call_seconds_bucket", operation="activate", le="5.0", **telna)
    assert fast == calls, "a carrier call on loopback took over 5 s"
    running = [_get(after, "esim_worker_balances", state=s) for s in ("Active", "Rotating")]
    assert sum(running) == 1, running
    assert _get(after, "esim_worker_balances", state="Cancelled") == 0
