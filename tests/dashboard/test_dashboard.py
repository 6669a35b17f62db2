"""The dashboard in headless Chromium against a small live fleet: figures and a timeline
as the API reports them, an action clicked and its effect seen, screenshots for the README."""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Page, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from models.payloads import BalanceStatus, Policy
from tests.e2e.harness import OPERATOR_KEY, SERVICE_KEY, Rig, iccids, rig

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs"
VIEWPORT = {"width": 1360, "height": 900}


def _chromium() -> str:
    """Debian's chromium (.ci/run installs it); never a browser download."""
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} missing: .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} missing (apt-get install chromium)")
    return str(CHROMIUM)


async def _api(r: Rig, path: str) -> Any:
    answer = await r.http.get(
        f"{r.api_url}{path}", headers={"Authorization": f"Bearer {OPERATOR_KEY}"}
    )
    answer.raise_for_status()
    return answer.json()


async def _agrees(
    read_page: Callable[[], Awaitable[Any]],
    read_api: Callable[[], Awaitable[Any]],
    what: str,
    timeout: float = 30,
) -> None:
    """The page shows what the API says, checked on a moment when the API held still
    (the same answer before and after reading the page): lines rotate meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        before = await read_api()
        shown = await read_page()
        after = await read_api()
        if before == after and shown == before:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: page {shown} != API {after}")


async def _sign_in(page: Page, url: str, key: str) -> None:
    await page.goto(f"{url}/dashboard/signin")
    await page.fill("#api_key", key)
    await page.click("button[type=submit]")


async def test_dashboard_shows_fleet_and_timeline_as_the_api_and_pauses_a_balance(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    chromium = _chromium()
    async with rig(dev_env, tmp_path, carrier="mixed") as r:
        telna, webbing = iccids(2)
        await r.add_esims(telna, webbing)
        policy = Policy(lead_seconds=6, margin_seconds=3)
        for one in (telna, webbing):
            await r.enrol(one, "compressed-10s", policy=policy)
        for one in (telna, webbing):
            await r.wait_for(one, lambda s: s.rotations >= 1, 60, "a rotation")
        balance_id = (await _api(r, f"/v1/esims/{telna}"))["open_balance"]["id"]

        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=chromium)
            page = await browser.new_page(viewport=VIEWPORT)

            # Nothing without a key; a wrong key is told so.
            await page.goto(f"{r.api_url}/")
            assert page.url.endswith("/dashboard/signin")
            await _sign_in(page, r.api_url, "not-a-key")
            await expect(page.locator("#signin-error")).to_contain_text("not accepted")
            await _sign_in(page, r.api_url, OPERATOR_KEY)
            await page.wait_for_url(f"{r.api_url}/")
            await expect(page.locator(f'#balances tr[data-balance="{balance_id}"]')).to_be_visible()
            await page.screenshot(path=str(DOCS / "dashboard.png"), full_page=True)

            # One eSIM's timeline: our lines and the carrier's, as the API has them.
            await page.goto(f"{r.api_url}/dashboard/esims/{telna}")

            async def api_lines() -> set[tuple[str, str]]:
                detail = await _api(r, f"/v1/balances/{balance_id}")
                return {(str(line["seq"]), line["state"]) for line in detail["lines"]}

            async def page_lines() -> set[tuple[str, str]]:
                await page.reload()
                bars = page.locator('svg.timeline rect[data-side="ours"]')
                return {
                    (
                        str(await bar.get_attribute("data-seq")),
                        str(await bar.get_attribute("data-state")),
                    )
                    for bar in await bars.all()
                }

            await _agrees(page_lines, api_lines, "our lines")

            async def carrier_shows_ours() -> bool:
                """The carrier's lane holds every line the API had before the page: its
                lines are a worker's read, kept a few seconds, so a page may show them as
                they were before our newest line."""
                ours = {seq for seq, _ in await api_lines()}
                await page.reload()
                bars = page.locator('svg.timeline rect[data-side="carrier"]')
                return ours <= {await bar.get_attribute("data-seq") for bar in await bars.all()}

            deadline = time.monotonic() + 40
            while not await carrier_shows_ours():
                assert time.monotonic() < deadline, "the carrier's lane never caught up"
                await asyncio.sleep(1)
            assert await page.locator("#carrier-error").count() == 0
            link = await page.locator("#temporal").get_attribute("href")
            assert link == f"http://127.0.0.1:8233/namespaces/default/workflows/balance-{telna}"
            await page.screenshot(path=str(DOCS / "dashboard-timeline.png"), full_page=True)

            # Pause from the dashboard; the page refreshes by itself until it shows Paused.
            await page.click('button[data-action="pause"]')
            await expect(page.locator("#sent")).to_contain_text("pause")
            await expect(page.locator("#state")).to_have_text("Paused", timeout=30_000)
            assert (await _api(r, f"/v1/balances/{balance_id}"))["state"] == "Paused"
            ended = [e for e in await r.ledger(telna) if e["action"] == "deactivate"]
            assert ended, "pause did not end the line at the carrier"

            # A still fleet (one paused, one cancelled): every figure as the API says.
            await r.cancel_and_wait(webbing)
            await page.goto(f"{r.api_url}/")

            async def api_fleet() -> dict[str, Any]:
                rows = (await _api(r, "/v1/balances?limit=200"))["data"]
                totals = (await _api(r, "/v1/continuity"))["total"]
                states = Counter(row["state"] for row in rows)
                return {
                    "states": {s.value: states.get(s.value, 0) for s in BalanceStatus},
                    "rotations": sum(row["rotations"] for row in rows),
                    "ids": sorted(row["id"] for row in rows),
                    "gap": f"{totals['gap_seconds']:.1f}",
                    "throttled": f"{totals['throttled_seconds']:.1f}",
                }

            async def page_fleet() -> dict[str, Any]:
                await page.reload()

                async def figure(selector: str) -> str:
                    return (await page.locator(f"#figures {selector} .n").inner_text()).strip()

                states = {}
                for s in BalanceStatus:
                    states[s.value] = int(await figure(f'[data-state="{s.value}"]'))
                ids = [
                    await row.get_attribute("data-balance")
                    for row in await page.locator("#balances tr[data-balance]").all()
                ]
                return {
                    "states": states,
                    "rotations": int(await figure('[data-figure="rotations"]')),
                    "ids": sorted(str(i) for i in ids),
                    "gap": await figure('[data-figure="gap_seconds"]'),
                    "throttled": await figure('[data-figure="throttled_seconds"]'),
                }

            await _agrees(page_fleet, api_fleet, "fleet figures")
            fleet = await api_fleet()
            assert fleet["states"]["Paused"] == 1 and fleet["states"]["Cancelled"] == 1
            for carrier in ("telna", "webbing"):
                row = page.locator(f'#carriers tr[data-carrier="{carrier}"]')
                assert await row.get_attribute("data-health") == "ok"

            # The spend card and plot: what the passes cost today and this month per
            # carrier, as GET /v1/spend says, and today's bar on the plot.
            async def api_spend() -> dict[str, tuple[str, str]]:
                """(carrier, currency) -> (today, this month), as the cells say them."""
                today = datetime.now(UTC).date()
                said: dict[str, dict[str, str]] = {"today": {}, "month": {}}
                for name, since in (("today", today), ("month", today.replace(day=1))):
                    report = await _api(r, f"/v1/spend?group_by=carrier&since={since}")
                    for g in report["groups"]:
                        amount = g["amount"] if g["amount"] is not None else "unpriced"
                        said[name][f"{g['key']} {g['currency']}"] = amount
                return {k: (said["today"].get(k, "0.00"), m) for k, m in said["month"].items()}

            async def page_spend() -> dict[str, tuple[str, str]]:
                await page.reload()
                shown: dict[str, tuple[str, str]] = {}
                for row in await page.locator("#spend-carriers tr[data-carrier]").all():
                    key = f"{await row.get_attribute('data-carrier')} "
                    key += str(await row.get_attribute("data-currency"))
                    cells = [
                        (await row.locator(f'td[data-figure="{name}"]').inner_text()).strip()
                        for name in ("today", "month")
                    ]
                    shown[key] = (cells[0], cells[1])
                return shown

            await _agrees(page_spend, api_spend, "spend per carrier")
            spent = await api_spend()
            assert {k.split()[0] for k in spent} == {"telna", "webbing"}, spent
            plot = page.get_by_role("img", name=re.compile("^Spend per UTC day in "))
            await expect(plot.first).to_be_visible()
            today = datetime.now(UTC).date().isoformat()
            assert await page.locator(f'svg.spend-plot rect.spend[data-day="{today}"]').count()
            await expect(page.locator('#spend [data-figure="spend_today"]').first).to_be_visible()

            # A service key may look but not act; a forged form is refused.
            await page.click("header button[type=submit]")
            await _sign_in(page, r.api_url, SERVICE_KEY)
            await page.goto(f"{r.api_url}/dashboard/esims/{telna}")
            await expect(page.locator("#actions")).to_contain_text("need an operator key")
            forged = await page.request.post(
                f"{r.api_url}/dashboard/balances/{balance_id}/resume", form={"csrf": "x"}
            )
            assert forged.status == 403
            await browser.close()
        assert (await _api(r, f"/v1/balances/{balance_id}"))["state"] == "Paused"
        await r.cancel_and_wait(telna)
