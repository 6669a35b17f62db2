"""pause / resume / rotate_now / change_product / cancel, as the carrier sees them."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlmodel import select
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from bench.purchases import package_lines
from models.db import session_scope
from models.payloads import BalanceStatus, ChangeProduct, Policy, ProductSpec
from models.tables import Balance, BalanceLine, LineEvent, Product
from services.enrolment import product_spec, workflow_id
from tests.e2e.harness import ALL_CARRIERS, OPERATOR_KEY, iccids, rig
from workflows.balance import BalanceWorkflow


def _product(url: str, product_id: str) -> ProductSpec:
    with session_scope(url) as session:
        row = session.get(Product, product_id)
        assert row is not None
        return product_spec(row)


@pytest.mark.parametrize("carrier", ALL_CARRIERS)
async def test_each_operator_action_changes_what_the_carrier_sees(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str, carrier: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url, carrier=carrier) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        p60, p30 = r.product(iccid, "compressed-60s"), r.product(iccid, "compressed-30s")
        c60, c30 = p60.split("-", 1)[1], p30.split("-", 1)[1]  # the carrier's own ids
        # A 60 s pass rotates by time only ~50 s after each activation: time enough.
        await r.enrol(iccid, p60, policy=Policy(lead_seconds=10, margin_seconds=5))
        first = await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        assert first.active is not None

        async def actions() -> list[tuple[str, str, str]]:
            """The carrier's ledger, each package named by the line of ours holding it (a
            carrier replacing a product in place has no id per purchase on its wire)."""
            entries = await r.ledger(iccid)
            with session_scope(r.settings.database_url) as session:
                lines = session.exec(select(BalanceLine).where(BalanceLine.iccid == iccid)).all()
            ours = {p: line.carrier_line_id for p, line in package_lines(entries, lines).items()}
            return [
                (e["action"], ours.get(e["package_id"]) or e["package_id"], e["product_id"])
                for e in entries
            ]

        await r.signal(iccid, "pause")
        await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Paused, 30, "Paused")
        assert ("deactivate", first.active.line_id, c60) in await actions()
        assert (await r.timeline(iccid))[-1]["state"] == "none"

        await r.signal(iccid, "resume")
        resumed = await r.wait_for(
            iccid, lambda s: s.active is not None and s.active.seq == 2, 30, "line 2"
        )
        assert resumed.active is not None
        assert ("activate", resumed.active.line_id, c60) in await actions()

        await r.signal(iccid, "rotate_now")
        rotated = await r.wait_for(iccid, lambda s: s.rotations == 1, 30, "rotation")
        assert rotated.active is not None and rotated.active.seq == 3
        seen = await actions()
        ended_old = seen.index(("deactivate", resumed.active.line_id, c60))
        started_new = seen.index(("activate", rotated.active.line_id, c60))
        if carrier == "esimgo":
            # Queued, with no start call: the old bundle is revoked first, and eSIM Go
            # starts the next one as the eSIM has no other.
            assert ended_old < started_new, seen

        handle = r.client.get_workflow_handle_for(BalanceWorkflow.run, workflow_id(iccid))
        new = _product(r.settings.database_url, p30)
        view = await handle.execute_update(
            BalanceWorkflow.change_product, ChangeProduct(product=new, actor="test")
        )
        assert view.next_product_id == p30
        await r.signal(iccid, "rotate_now")
        changed = await r.wait_for(iccid, lambda s: s.rotations == 2, 30, "rotation")
        assert changed.active is not None and changed.product_id == p30
        assert ("order", changed.active.line_id, c30) in await actions()

        await r.cancel_and_wait(iccid)
        entries = await r.ledger(iccid)
        ended = {e["package_id"] for e in entries if e["action"] in ("deactivate", "cancel")}
        ended |= {e["package_id"] for e in entries if e["action"] == "expire"}
        activated = {e["package_id"] for e in entries if e["action"] == "activate"}
        assert activated <= ended, "a line is still active at the carrier after cancel"
        assert (await r.timeline(iccid))[-1]["state"] == "none"
        await r.assert_database_matches_carrier(iccid)
        with session_scope(r.settings.database_url) as session:
            balance = session.exec(select(Balance).where(Balance.iccid == iccid)).one()
            assert balance.state == "Cancelled" and balance.open_iccid is None
            kinds = [e.kind for e in session.exec(select(LineEvent)).all()]
        for kind in ("paused", "resumed", "rotate_requested", "product_changed", "cancelled"):
            assert kind in kinds, kind


async def test_change_product_refuses_another_carriers_product(
    dev_env: WorkflowEnvironment, tmp_path: Path, database_url: str
) -> None:
    async with rig(dev_env, tmp_path, database_url=database_url) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await r.enrol(iccid, "telna-compressed-60s")
        await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        handle = r.client.get_workflow_handle_for(BalanceWorkflow.run, workflow_id(iccid))
        foreign = _product(r.settings.database_url, "telna-compressed-60s").model_copy(
            update={"id": "webbing-1042", "carrier": "webbing"}
        )
        try:
            await handle.execute_update(
                BalanceWorkflow.change_product, ChangeProduct(product=foreign)
            )
        except WorkflowUpdateFailedError as error:
            assert "webbing" in str(error.cause)
        else:
            raise AssertionError("update accepted a product of another carrier")
        status = await r.status(iccid)
        assert status.next_product_id is None
        await r.cancel_and_wait(iccid)


async def test_rotate_keeps_within_the_cost_cap_unless_forced_and_buying_is_rate_limited(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    async with rig(dev_env, tmp_path) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        capped = Policy(lead_seconds=10, margin_seconds=5, max_lines_per_day=1)
        await r.enrol(iccid, "compressed-60s", policy=capped)
        first = await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        assert first.cap_reached  # its one line of today is up
        headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
        path = f"{r.api_url}/v1/balances/{first.balance_id}"

        refused = await r.http.post(f"{path}/rotate", headers=headers)
        assert refused.status_code == 409, refused.text
        assert refused.json()["error"]["code"] == "cap_reached"
        # Past the API (a signal sent straight to Temporal), the workflow refuses it too.
        await r.signal(iccid, "rotate_now")
        for _ in range(40):
            with session_scope(r.settings.database_url) as session:
                kinds = session.exec(
                    select(LineEvent.kind).where(LineEvent.balance_id == first.balance_id)
                ).all()
            if "rotate_refused" in kinds:
                break
            await asyncio.sleep(0.25)
        assert "rotate_refused" in kinds and "rotate_requested" not in kinds
        assert (await r.status(iccid)).rotations == 0

        forced = await r.http.post(f"{path}/rotate", json={"force": True}, headers=headers)
        assert forced.status_code == 202, forced.text
        rotated = await r.wait_for(iccid, lambda s: s.rotations == 1, 30, "forced rotation")
        assert rotated.active is not None and rotated.active.seq == 2

        # Six resumes or rotations a balance per hour: the forced one and five more.
        answers = [
            (await r.http.post(f"{path}/resume", headers=headers)).status_code for _ in range(6)
        ]
        assert answers == [202] * 5 + [429], answers
        limited = await r.http.post(f"{path}/rotate", json={"force": True}, headers=headers)
        assert limited.status_code == 429
        assert limited.json()["error"]["code"] == "action_limited"
        assert 0 < int(limited.headers["Retry-After"]) <= 3600
        # Pausing buys nothing and is never limited.
        assert (await r.http.post(f"{path}/pause", headers=headers)).status_code == 202
        await r.cancel_and_wait(iccid)
        orders = [e for e in await r.ledger(iccid) if e["action"] == "order"]
        assert len(orders) == 2, orders


def _events(url: str, balance_id: str) -> list[tuple[str, int | None, dict[str, object]]]:
    with session_scope(url) as session:
        rows = session.exec(
            select(LineEvent).where(LineEvent.balance_id == balance_id).order_by(LineEvent.id)  # type: ignore[arg-type]
        ).all()
        return [(e.kind, e.seq, dict(e.detail)) for e in rows]


async def test_at_esimgo_a_pause_revokes_what_is_queued_and_active_saying_what_was_refunded(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """Refunds enabled on the account, revokes asking for the balance: the bundle queued
    (never started) is credited to the balance, the active one is not; the ledger says
    so on each line's event, and the balance's spend is what eSIM Go's account balance
    went down by, to the cent, the refund taken off."""
    async with rig(dev_env, tmp_path, carrier="esimgo", esimgo_refund_to_balance=True) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        start = (await r.esimgo_account(refunds_enabled=True))["balance"]
        # The 60 s bundle's successor is bought 10 s into it.
        await r.enrol(iccid, "compressed-60s", policy=Policy(lead_seconds=50, margin_seconds=3))
        ahead = await r.wait_for(
            iccid, lambda s: s.active is not None and s.scheduled is not None, 30, "bought ahead"
        )
        assert ahead.active is not None and ahead.scheduled is not None
        before = (await r.esimgo_account())["balance"]
        await r.signal(iccid, "pause")
        await r.wait_for(iccid, lambda s: s.status == BalanceStatus.Paused, 30, "Paused")
        after = (await r.esimgo_account())["balance"]
        price = 0.01  # the compressed bundle's price
        assert after == pytest.approx(before + price), (before, after)
        queued, active = ahead.scheduled.line_id, ahead.active.line_id
        assert queued is not None and active is not None
        ends = {e["package_id"]: e["action"] for e in await r.ledger(iccid)}
        assert ends[queued.rsplit(":", 1)[1]] == "cancel"  # revoked unused
        assert ends[active.rsplit(":", 1)[1]] == "deactivate"  # revoked started
        said = {
            seq: detail.get("refunded")
            for kind, seq, detail in _events(r.settings.database_url, ahead.balance_id)
            if kind == "cancelled"
        }
        assert said == {2: "refunded to balance", 1: "not refunded"}, said
        await r.cancel_and_wait(iccid)
        assert (await r.timeline(iccid))[-1]["state"] == "none"
        await r.assert_database_matches_carrier(iccid)
        billed = round((start - (await r.esimgo_account())["balance"]) * 100)
        got = await r.http.get(
            f"{r.api_url}/v1/balances/{ahead.balance_id}",
            headers={"Authorization": f"Bearer {OPERATOR_KEY}"},
        )
        [spend] = got.json()["spend"]
        assert (spend["amount_cents"], spend["refunded_cents"], spend["lines"]) == (
            billed,
            round(price * 100),
            2,
        ), (start, spend)


async def test_at_esimgo_the_last_bundle_of_an_esim_never_installed_is_left_on_it(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """An eSIM on no device never attaches: its first bundle stays queued, the balance
    waits for it (Failing). A pause must not revoke that bundle (eSIM Go would take the
    eSIM back): it is left on the eSIM, and the ledger says so and why. Installed, the
    eSIM starts it; resumed, the balance brings that same bundle up (nothing bought
    again). A cancel before any start leaves it too, and the workflow completes."""
    async with rig(dev_env, tmp_path, carrier="esimgo") as r:
        first, second = iccids(2)
        await r.add_esims(first, second)
        await r.esimgo_installed(first, second, installed=False)
        policy = Policy(lead_seconds=10, margin_seconds=3)
        for iccid in (first, second):
            await r.enrol(iccid, "compressed-60s", policy=policy)
        waiting = await r.wait_for(
            first,
            lambda s: s.scheduled is not None and s.scheduled.line_id is not None,
            30,
            "line 1 bought",
        )
        assert waiting.active is None and waiting.scheduled is not None
        line_1 = waiting.scheduled.line_id
        await r.signal(first, "pause")
        paused = await r.wait_for(first, lambda s: s.status == BalanceStatus.Paused, 30, "Paused")
        assert paused.scheduled is not None and paused.scheduled.line_id == line_1
        events = _events(r.settings.database_url, paused.balance_id)
        left = [detail for kind, seq, detail in events if kind == "left_on_esim" and seq == 1]
        assert left and "last bundle" in str(left[0]["why"]), events
        assert [e["action"] for e in await r.ledger(first)] == ["order"]  # not revoked

        await r.esimgo_installed(first)  # on a device now: line 1 starts
        await r.signal(first, "resume")
        resumed = await r.wait_for(
            first, lambda s: s.active is not None, 30, "line 1 brought up on resume"
        )
        assert resumed.active is not None and resumed.active.line_id == line_1
        assert resumed.status == BalanceStatus.Active and resumed.failing_reason is None

        # The other never starts: a cancel completes the balance, its bundle left on it.
        await r.wait_for(second, lambda s: s.scheduled is not None, 30, "line 1 bought")
        # The audit reads both eSIMs' bundles: a bundle waiting on an eSIM on no device
        # is our scheduled line (the balance shows Failing for it), not a finding.
        report = await r.audit(settle_seconds=0, switch_allowance_seconds=0)
        assert report.balances == 2 and report.findings == {}, report
        await r.cancel_and_wait(second, first)
        account = await r.esimgo_account()
        assert account["removed"] == [], account  # no eSIM taken back
        assert [e["action"] for e in await r.ledger(second)] == ["order"]
        second_view = await r.status(second)
        assert second_view.status == BalanceStatus.Cancelled
        kinds = [k for k, _, _ in _events(r.settings.database_url, second_view.balance_id)]
        assert "left_on_esim" in kinds and "cancelled" in kinds, kinds
        assert await r.purchases_made_twice(first, second) == []

        await r.assert_database_matches_carrier(first, second)
