"""The spend ledger against what the carriers bill: a mixed fleet on Telna, Webbing and
eSIM Go rotates over several compressed days, and ``GET /v1/spend`` (per carrier, per
customer), each balance's spend and the worker's ``esim_spend_total`` equal, to the cent,
the prices of the ``order`` entries in the simulators' ledgers."""

from __future__ import annotations

import csv
import io
from collections import Counter
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from models.payloads import Policy
from services.enrolment import workflow_id
from services.metrics import REGISTRY
from tests.e2e.harness import ALL_CARRIERS, OPERATOR_KEY, iccids, rig

FAST = Policy(lead_seconds=5, margin_seconds=3)
AUTH = {"Authorization": f"Bearer {OPERATOR_KEY}"}
CUSTOMERS = ("ACME", "GLOBEX")


def _counted(carrier: str) -> float:
    sample = REGISTRY.get_sample_value("esim_spend_total", {"carrier": carrier, "currency": "USD"})
    return sample or 0.0


async def test_spend_equals_what_the_carriers_bill_to_the_cent(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    counted_before = {carrier: _counted(carrier) for carrier in ALL_CARRIERS}
    async with rig(dev_env, tmp_path, carrier="mixed", mixed=ALL_CARRIERS) as r:
        fleet = iccids(6)
        await r.add_esims(*fleet)
        customer = {iccid: CUSTOMERS[n % 2] for n, iccid in enumerate(fleet)}
        for iccid in fleet:
            await r.enrol(iccid, "compressed-10s", policy=FAST, customer_ref=customer[iccid])
        for iccid in fleet:
            await r.wait_for(iccid, lambda s: s.rotations >= 3, 60, "three rotations")
        await r.cancel_and_wait(*fleet)

        billed: Counter[str] = Counter()  # cents, by carrier
        orders: Counter[str] = Counter()
        by_customer: Counter[str] = Counter()
        by_iccid: Counter[str] = Counter()
        for iccid in fleet:
            for entry in await r.ledger(iccid):
                if entry["action"] != "order":
                    continue
                assert entry["currency"] == "USD" and entry["price_cents"] > 0, entry
                carrier = r.carrier_of[iccid]
                billed[carrier] += entry["price_cents"]
                orders[carrier] += 1
                by_customer[customer[iccid]] += entry["price_cents"]
                by_iccid[iccid] += entry["price_cents"]
        assert set(billed) == set(ALL_CARRIERS)

        spend = await r.http.get(f"{r.api_url}/v1/spend", headers=AUTH)
        assert spend.status_code == 200, spend.text
        assert [
            (g["key"], g["currency"], g["amount_cents"], g["lines"], g["unpriced_lines"])
            for g in spend.json()["groups"]
        ] == [(c, "USD", billed[c], orders[c], 0) for c in sorted(ALL_CARRIERS)]
        assert {g["key"]: g["amount"] for g in spend.json()["groups"]} == {
            c: f"{billed[c] / 100:.2f}" for c in ALL_CARRIERS
        }

        exported = await r.http.get(
            f"{r.api_url}/v1/spend",
            params={"group_by": "customer"},
            headers=AUTH | {"Accept": "text/csv"},
        )
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert {row["customer"]: int(row["amount_cents"]) for row in rows} == dict(by_customer)

        for iccid in fleet:
            balance_id = (await r.status(iccid)).balance_id
            got = await r.http.get(f"{r.api_url}/v1/balances/{balance_id}", headers=AUTH)
            body = got.json()
            assert body["customer_ref"] == customer[iccid]
            [usd] = body["spend"]
            assert (usd["currency"], usd["amount_cents"], usd["unpriced_lines"]) == (
                "USD",
                by_iccid[iccid],
                0,
            ), (iccid, r.carrier_of[iccid], await r.ledger(iccid))
            assert workflow_id(iccid) == body["workflow_id"]

        # The worker counted each purchase once, as it was first recorded.
        for carrier in ALL_CARRIERS:
            counted = _counted(carrier) - counted_before[carrier]
            assert round(counted * 100) == billed[carrier], carrier
        assert await r.purchases_made_twice(*fleet) == []
