"""The audit on the real dev server: a lost workflow restarted, each disagreement found,
the spend ledger held against the carrier.

Disagreements are planted at the Telna-like simulator through its own API, as a person
at the carrier's portal would: a package ended, a package bought with our reference.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlmodel import col, select
from temporalio.client import ScheduleActionStartWorkflow, ScheduleOverlapPolicy
from temporalio.testing import WorkflowEnvironment

from carriers.telna import TelnaCarrier
from models.db import session_scope
from models.payloads import BalanceStatusView, Policy
from models.tables import BalanceLine, LineEvent
from services.enrolment import workflow_id
from services.metrics import REGISTRY
from tests.e2e.harness import API_KEY, Rig, iccids, none_seconds, rig
from workflows.audit import AuditWorkflow, ensure_audit_schedule

# Carrier changes older than this are judged (production: the margin, at least 5 s).
SETTLE = 1.0


def findings_metric(kind: str, repaired: str) -> float:
    value = REGISTRY.get_sample_value(
        "esim_audit_findings_total", {"kind": kind, "repaired": repaired}
    )
    return value or 0.0


def audit_events(r: Rig, balance_id: str) -> list[LineEvent]:
    with session_scope(r.settings.database_url) as session:
        return list(
            session.exec(
                select(LineEvent)
                .where(LineEvent.balance_id == balance_id)
                .where(col(LineEvent.kind).startswith("audit_"))
            ).all()
        )


def line_row(r: Rig, balance_id: str, seq: int) -> BalanceLine | None:
    with session_scope(r.settings.database_url) as session:
        return session.exec(
            select(BalanceLine)
            .where(BalanceLine.balance_id == balance_id)
            .where(BalanceLine.seq == seq)
        ).first()


async def sleep_until(at: datetime) -> None:
    await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))


# On PostgreSQL only: the other e2e tests are on SQLite, tests/e2e/test_re_enrolment.py
# restores a balance there.
@pytest.mark.parametrize(
    "database_url", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
async def test_a_terminated_workflow_is_restarted_and_rotates_on_without_a_gap_or_second_buy(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        # 30 s passes started through the API (nothing starts line 2 but us): order 25 s
        # before the end, switch 15 s before it (a line every 15 s).
        policy = Policy(lead_seconds=25, margin_seconds=15)
        await r.enrol(iccid, "compressed-30s-manual", policy=policy)
        before = await r.wait_for(
            iccid, lambda s: s.active is not None and s.scheduled is not None, 30, "line 2 ordered"
        )
        assert before.switch_at is not None and before.active is not None
        await r.client.get_workflow_handle(workflow_id(iccid)).terminate("lost by hand")
        restarts = findings_metric("missing_workflow", "true")
        stuck = findings_metric("stuck_scheduled", "false")  # flagged, never repaired

        # Past the switch time, before line 1's end.
        await sleep_until(before.switch_at)
        await asyncio.sleep(SETTLE + 0.5)
        report = await r.audit(settle_seconds=SETTLE)

        assert report.restarted == 1
        assert report.new_findings.get("missing_workflow") == 1
        assert report.new_findings.get("stuck_scheduled") == 1, report
        assert findings_metric("missing_workflow", "true") == restarts + 1
        assert findings_metric("stuck_scheduled", "false") == stuck + 1
        kinds = {e.kind: e for e in audit_events(r, before.balance_id)}
        assert {"audit_missing_workflow", "audit_stuck_scheduled"} <= set(kinds)
        assert kinds["audit_missing_workflow"].detail["active_seq"] == 1
        assert kinds["audit_missing_workflow"].detail["scheduled_seq"] == 2

        # The restarted workflow adopted both lines: it switches to line 2 at once.
        after = await r.wait_for(
            iccid, lambda s: s.rotations >= 2 and s.active is not None, 45, "two more rotations"
        )
        assert after.active is not None and after.active.seq == 3
        again = await r.audit(settle_seconds=SETTLE)
        assert again.restarted == 0 and "missing_workflow" not in again.findings
        stopped_at = datetime.now(UTC)
        await r.cancel_and_wait(iccid)

        assert none_seconds(await r.timeline(iccid), until=stopped_at) == 0
        orders = [e for e in await r.ledger(iccid) if e["action"] == "order"]
        assert len(orders) >= 3
        assert await r.purchases_made_twice(iccid) == []
        await r.assert_database_matches_carrier(iccid)


async def test_each_disagreement_is_found_recorded_counted_and_repaired_where_safe(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        ghost, orphan, double, unordered = fleet = iccids(4)
        await r.add_esims(*fleet)
        # 60 s passes started through the API (no package starts by itself, so what is
        # planted below stays as planted); the unordered one orders 10 s after
        # activation, the others 40 s.
        late = Policy(lead_seconds=20, margin_seconds=2)
        await r.enrol(ghost, "compressed-60s-manual", policy=late)
        await r.enrol(orphan, "compressed-60s-manual", policy=late)
        await r.enrol(double, "compressed-60s-manual", policy=late)
        await r.enrol(
            unordered, "compressed-60s-manual", policy=Policy(lead_seconds=50, margin_seconds=5)
        )
        up: dict[str, BalanceStatusView] = {}
        for iccid in fleet:
            up[iccid] = await r.wait_for(iccid, lambda s: s.active is not None, 30, "line 1")
        # Telna's webhooks off: the audit alone is to find what is done below (with them,
        # a termination reaches the workflow at once and leaves nothing to find).
        off = await r.http.post(f"{r.sims['telna']}/_sim/config", json={"webhook_url": ""})
        off.raise_for_status()
        telna = TelnaCarrier(r.sims["telna"], API_KEY, timeout=5.0)
        try:
            # The ghost's active line ended at the carrier behind our back.
            active = up[ghost].active
            assert active is not None and active.line_id is not None
            await telna.deactivate(active.line_id)
            # A package bought that nobody recorded (Telna shows no reference of ours).
            stray = await telna.order(
                orphan, "compressed-60s-manual", f"{up[orphan].balance_id}:99"
            )
            # A second active package beside the balance's own.
            extra = await telna.order(
                double, "compressed-60s-manual", f"{up[double].balance_id}:98"
            )
            await telna.activate(extra.line_id)
            # The scheduled line cancelled at the carrier: past order time, nothing ordered.
            waiting = await r.wait_for(
                unordered,
                lambda s: s.active is not None and s.scheduled is not None,
                30,
                "line 2 ordered",
            )
            assert waiting.scheduled is not None and waiting.scheduled.line_id is not None
            await telna.deactivate(waiting.scheduled.line_id)
            # Older than settle, and the extra package active for longer than the 2 s margin.
            await asyncio.sleep(SETTLE + 2.5)
            metrics_before = {
                kind: findings_metric(kind, "true")
                for kind in (
                    "ghost_line",
                    "orphan_purchase",
                    "two_active_lines",
                    "missing_scheduled_line",
                )
            }
            report = await r.audit(settle_seconds=SETTLE, switch_allowance_seconds=0)

            expected = {
                ghost: {"audit_ghost_line"},
                orphan: {"audit_orphan_purchase"},
                double: {"audit_orphan_purchase", "audit_two_active_lines"},
                unordered: {"audit_ghost_line", "audit_missing_scheduled_line"},
            }
            # Ours are repaired; packages no line of ours accounts for (no reference to
            # tell whose) are flagged for an operator and left alone.
            flagged = {"audit_orphan_purchase", "audit_two_active_lines"}
            for iccid, kinds in expected.items():
                events = audit_events(r, up[iccid].balance_id)
                assert {e.kind for e in events} == kinds, (iccid, [e.detail for e in events])
                for e in events:
                    assert e.detail["repaired"] == (e.kind not in flagged), e.detail
            assert report.new_findings == {
                "ghost_line": 2,
                "missing_scheduled_line": 1,
                "orphan_purchase": 2,
                "two_active_lines": 1,
            }, report
            for kind in ("ghost_line", "missing_scheduled_line"):
                count = report.new_findings[kind]
                assert findings_metric(kind, "true") == metrics_before[kind] + count, kind

            # Repairs: the ghost rotated onto a new line, the cancelled scheduled line
            # was replaced, the extra packages were ended and written down.
            rotated = await r.wait_for(
                ghost, lambda s: s.active is not None and s.active.seq == 2, 30, "line 2"
            )
            assert rotated.rotations == 1
            await r.wait_for(
                unordered,
                lambda s: s.scheduled is not None and s.scheduled.seq == 3,
                30,
                "line 3 ordered in place of line 2",
            )
            row = line_row(r, up[unordered].balance_id, 2)
            assert row is not None and row.state == "failed"  # ended before it was active
            for iccid, seq, package in ((orphan, 99, stray), (double, 98, extra)):
                assert line_row(r, up[iccid].balance_id, seq) is None  # no seq made up
                statuses = {line.line_id: line.status for line in await telna.find_lines(iccid)}
                assert statuses[package.line_id] != "ended", (iccid, statuses)

            # The same audit again records nothing new.
            again = await r.audit(settle_seconds=SETTLE, switch_allowance_seconds=0)
            assert again.new_findings == {}, again
        finally:
            await telna.aclose()
        await r.cancel_and_wait(*fleet)


def set_price(r: Rig, balance_id: str, seq: int, cents: int | None, currency: str | None) -> None:
    """The line's recorded price changed behind the product's back (a bad migration, a
    hand edit): what the audit's price rules are to find."""
    with session_scope(r.settings.database_url) as session:
        session.execute(
            sa.update(BalanceLine)
            .where(col(BalanceLine.balance_id) == balance_id, col(BalanceLine.seq) == seq)
            .values(price_cents=cents, currency=currency)
        )


async def test_a_line_whose_price_was_lost_is_one_unpriced_purchase_and_a_clean_one_none(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    """The spend ledger against the carrier. A clean balance: no finding. Its line's
    price nulled in the database: one ``unpriced_purchase``, flagged (Telna shows no price
    on a package to take), naming the catalogue's price at stake; not recorded again. Its
    price altered: no ``price_mismatch``, Telna shows nothing to compare it with
    (``carriers.telna.NOT_PUBLIC.package_price``)."""
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        # Line 2 is ordered 40 s after line 1 starts: the audits below come before.
        await r.enrol(iccid, "compressed-60s-manual", policy=Policy(lead_seconds=20))
        up = await r.wait_for(iccid, lambda s: s.active is not None, 30, "line 1")
        await asyncio.sleep(SETTLE + 0.5)
        clean = await r.audit(settle_seconds=SETTLE)
        assert clean.new_findings == {}, clean
        row = line_row(r, up.balance_id, 1)
        assert row is not None and row.price_cents is not None and row.currency is not None

        unpriced = findings_metric("unpriced_purchase", "false")
        set_price(r, up.balance_id, 1, None, None)
        report = await r.audit(settle_seconds=SETTLE)
        assert report.new_findings == {"unpriced_purchase": 1}, report
        assert findings_metric("unpriced_purchase", "false") == unpriced + 1
        [event] = audit_events(r, up.balance_id)
        assert (event.kind, event.seq, event.detail["repaired"]) == (
            "audit_unpriced_purchase",
            1,
            False,
        )
        assert event.detail["carrier_price_cents"] is None
        catalogue = event.detail["catalogue_price_cents"], event.detail["catalogue_currency"]
        assert catalogue == (row.price_cents, row.currency)
        again = await r.audit(settle_seconds=SETTLE)
        assert again.new_findings == {}, again

        set_price(r, up.balance_id, 1, row.price_cents + 100, row.currency)
        altered = await r.audit(settle_seconds=SETTLE)
        assert altered.new_findings == {}, altered
        await r.cancel_and_wait(iccid)


async def test_the_audit_schedule_is_created_once_and_follows_the_settings(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path) as r:
        schedule_id = f"audit-{r.settings.task_queue}"
        handle = r.client.get_schedule_handle(schedule_id)
        try:
            await ensure_audit_schedule(r.client, r.settings, schedule_id)
            r.settings.audit_interval_seconds = 120
            await ensure_audit_schedule(r.client, r.settings, schedule_id)  # updates in place
            described = await handle.describe()
        finally:
            await handle.delete()
        schedule = described.schedule
        assert [spec.every for spec in schedule.spec.intervals] == [timedelta(seconds=120)]
        assert schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == AuditWorkflow.__name__
        assert action.task_queue == r.settings.task_queue
