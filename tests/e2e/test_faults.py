"""What real carriers do — errors, outages, lost responses — and nothing is lost."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from models.payloads import BalanceStatus, Policy
from tests.e2e.harness import ALL_CARRIERS, iccids, none_seconds, rig, state_seconds

FAST = Policy(lead_seconds=5, margin_seconds=3)


@pytest.mark.slow
async def test_lost_responses_never_buy_twice(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    async with rig(dev_env, tmp_path, carrier="mixed", mixed=ALL_CARRIERS) as r:
        fleet = iccids(10)
        await r.add_esims(*fleet)
        await r.faults(lose_responses=0.3)
        for iccid in fleet:
            await r.enrol(iccid, "compressed-10s", policy=FAST)
        for _ in range(240):
            orders = [e for e in await r.ledger() if e["action"] == "order"]
            if len(orders) >= 60:
                break
            await asyncio.sleep(0.5)
        injected = await r.faults()
        assert injected["lost_response"] >= 20, injected
        await r.cancel_and_wait(*fleet)
        orders = [e for e in await r.ledger() if e["action"] == "order"]
        assert len(orders) >= 50
        assert await r.purchases_made_twice(*fleet) == []
        await r.assert_database_matches_carrier(*fleet)


@pytest.mark.slow
async def test_a_carrier_committing_after_our_timeout_never_sells_a_line_twice(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """For a minute and a half every order, activation and deactivation at every carrier takes
    effect after the client gave up on it: each order is held in doubt until it shows,
    and adopted; nothing is bought twice and the lines still hand over without a gap."""
    # The in-doubt window covers the slow commit and, where a change of product shows
    # only once in effect (Webbing), the activation latency after it.
    async with rig(
        dev_env,
        tmp_path,
        carrier="mixed",
        mixed=ALL_CARRIERS,
        carrier_timeout=1.0,
        in_doubt_seconds=5.0,
    ) as r:
        fleet = iccids(6)
        await r.add_esims(*fleet)
        await r.faults(commit_delay_ms=1500)  # over the client's timeout
        policy = Policy(lead_seconds=12, margin_seconds=6)
        for iccid in fleet:
            await r.enrol(iccid, "compressed-30s", policy=policy)
        await asyncio.sleep(90)
        stopped_at = datetime.now(UTC)
        injected = await r.faults()
        await r.faults()  # cleared: the cancellations below answer at once
        await r.cancel_and_wait(*fleet)
        orders = [e for e in await r.ledger() if e["action"] == "order"]
        print(f"slow commits {injected['commit_delay']}, orders {len(orders)}")
        assert injected["commit_delay"] >= len(orders), injected  # every purchase was slow
        assert len(orders) >= 3 * len(fleet), len(orders)
        assert await r.purchases_made_twice(*fleet) == []
        await r.assert_database_matches_carrier(*fleet)
        for iccid in fleet:
            assert none_seconds(await r.timeline(iccid), until=stopped_at) == 0, iccid


@pytest.mark.slow
async def test_errors_and_outages_shorter_than_the_lead_leave_no_gap(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    # The simulators' errors and outages are 503s, refused and sent again at every
    # carrier (at eSIM Go too: an order of one bundle answered 503 was not taken,
    # carriers/esimgo.py WIRE.order_refused_by_503). An eSIM Go order whose answer is lost
    # or a 500 would be held in doubt: until the moment it had to leave by (5 s,
    # models/claims.py) and the window after it, what the simulator may take to commit
    # (at once here: 3 s, not a production minute).
    async with rig(
        dev_env, tmp_path, carrier="mixed", mixed=ALL_CARRIERS, in_doubt_seconds=3.0
    ) as r:
        fleet = iccids(3)
        await r.add_esims(*fleet)
        # 30 s passes, 20 s lead, 3 s margin.
        policy = Policy(lead_seconds=20, margin_seconds=3)
        for iccid in fleet:
            await r.enrol(iccid, "compressed-30s", policy=policy)
        await r.faults(error_rate=0.2)

        # 1. An outage over the switch and the line's end, once the next line is ordered:
        #    the carrier starts the ordered line itself when the old one ends.
        #    (In place, nothing is bought ahead: the device keeps its product, throttled.)
        views = [
            await r.wait_for(
                i,
                lambda s, ahead=r.carrier_of[i] != "webbing": (
                    s.active is not None and (s.scheduled is not None or not ahead)
                ),
                40,
                "line 2 ordered, where it is bought ahead",
            )
            for i in fleet
        ]
        ends = min(v.active.ends_at for v in views if v.active and v.active.ends_at)
        await asyncio.sleep(max(0.0, (ends - datetime.now(UTC)).total_seconds() - 5))
        await r.faults(error_rate=0.2, outage_seconds=8)
        await asyncio.sleep(8.5)

        # 2. An outage that begins before the order moment and ends in time to order.
        first = await r.wait_for(fleet[0], lambda s: s.rotations >= 1, 40, "rotation 1")
        assert first.order_at is not None
        await asyncio.sleep(max(0.0, (first.order_at - datetime.now(UTC)).total_seconds() - 1))
        await r.faults(error_rate=0.2, outage_seconds=5)

        # Rotation 2 switches to the line ordered after that outage: both are behind.
        for iccid in fleet:
            await r.wait_for(iccid, lambda s: s.rotations >= 2, 120, "two rotations")
        injected = await r.faults()
        assert injected["outage"] > 0 and injected["error"] > 0, injected
        stopped_at = datetime.now(UTC)
        await r.cancel_and_wait(*fleet)
        for iccid in fleet:
            assert none_seconds(await r.timeline(iccid), until=stopped_at) == 0, iccid
        await r.assert_database_matches_carrier(*fleet)


@pytest.mark.slow
@pytest.mark.parametrize("carrier", ["telna", "webbing", "esimgo"])
async def test_an_outage_longer_than_the_lead_shows_failing_and_recovers(
    dev_env: WorkflowEnvironment, tmp_path: Path, carrier: str
) -> None:
    # eSIM Go's 503 on an order may mean it was taken (carriers/esimgo.py), so each order
    # sent during the outage is held in doubt: here 3 s past the moment it had to leave
    # by, what the simulator may take to commit (at once), not a production minute.
    async with rig(dev_env, tmp_path, carrier=carrier, in_doubt_seconds=3.0) as r:
        (iccid,) = iccids(1)
        await r.add_esims(iccid)
        await r.enrol(iccid, "compressed-10s", policy=FAST)
        first = await r.wait_for(iccid, lambda s: s.active is not None, 30, "first line")
        assert first.active is not None and first.active.ends_at is not None
        ends_at = first.active.ends_at
        # The outage starts before the order moment and lasts past the line's end.
        wait = (ends_at - datetime.now(UTC)).total_seconds() - 7
        await asyncio.sleep(max(0.0, wait))
        outage = 15.0
        started = datetime.now(UTC)
        await r.faults(outage_seconds=outage)
        failing = await r.wait_for(
            iccid, lambda s: s.status == BalanceStatus.Failing, 20, "Failing during the outage"
        )
        assert failing.failing_reason
        recovered = await r.wait_for(
            iccid,
            lambda s: (
                s.status == BalanceStatus.Active and s.active is not None and s.active.seq >= 2
            ),
            40,
            "recovery",
        )
        assert recovered.failing_reason is None
        stopped_at = datetime.now(UTC)
        await r.cancel_and_wait(iccid)
        timeline = await r.timeline(iccid)
        gap = none_seconds(timeline, until=stopped_at)
        slow = state_seconds(timeline, "throttled", until=stopped_at)
        overrun = (started.timestamp() + outage) - ends_at.timestamp()
        # The outage's overrun past the line's end, plus the time to order and start a
        # line once the carrier answers again (retry backoff, activation latency): a gap
        # where passes end (Telna; eSIM Go, whose orders answered 503 are also held in
        # doubt), throttled time where the device keeps its product past its pass until
        # the next change (Webbing, one product replaced in place).
        lost = slow if carrier == "webbing" else gap
        print(f"{carrier}: overrun {overrun:.2f} s, gap {gap:.2f} s, throttled {slow:.2f} s")
        assert 0 < lost <= overrun + 6, (gap, slow, overrun)
        assert carrier != "webbing" or gap == 0, gap
        await r.assert_database_matches_carrier(iccid)


@pytest.mark.slow
async def test_esimgo_answering_429_is_waited_out_and_nothing_is_lost_or_bought_twice(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    """eSIM Go limits each IP in one-second windows of tokens, and answers 429 with
    ``Retry-After: 1`` past them (CARRIERS.md 3.1). With a window of 4 tokens (an order
    costs 2) and at most 3 requests a second, a fleet's calls meet 429s: the client holds
    its requests for the window and the Retry-After and sends them again, and every
    bundle is still bought once, ahead, and starts as the one before ends.

    The limit is below the fleet's bursts (four eSIMs enrolled at once rotate together)
    but above its steady need: a rotation at eSIM Go is about 4.6 calls (BENCHMARKS.md),
    1.8 a second for four eSIMs on 10 s passes. At 2 a second the limit left no room to
    catch up, and a loaded machine made one order late enough for a 0.07 s gap: that is
    a fleet beyond the carrier's limit, which no pacing fixes (the herd spreads orders
    under it instead)."""
    async with rig(dev_env, tmp_path, carrier="esimgo") as r:
        fleet = iccids(4)
        await r.add_esims(*fleet)
        await r.esimgo_account(rate_limit_tokens=4)
        sim = r.sims["esimgo"]
        limited = await r.http.post(f"{sim}/_sim/faults", json={"rate_limit_per_second": 3})
        limited.raise_for_status()
        for iccid in fleet:
            await r.enrol(iccid, "compressed-10s", policy=FAST)
        for iccid in fleet:
            await r.wait_for(iccid, lambda s: s.rotations >= 3, 60, "three rotations")
        stopped_at = datetime.now(UTC)
        met = (await r.http.get(f"{sim}/_sim/faults")).json()["injected"]["rate_limit"]
        await r.http.post(f"{sim}/_sim/faults", json={})
        await r.esimgo_account(rate_limit_tokens=10)
        await r.cancel_and_wait(*fleet)
        orders = [e for e in await r.ledger() if e["action"] == "order"]
        print(f"429s met {met}, orders {len(orders)}")
        assert met >= 5, met
        assert len(orders) >= 3 * len(fleet), len(orders)
        for iccid in fleet:
            assert none_seconds(await r.timeline(iccid), until=stopped_at) == 0, iccid
        assert await r.purchases_made_twice(*fleet) == []
        await r.assert_database_matches_carrier(*fleet)
