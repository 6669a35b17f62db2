"""The demo fleet's plan and the progress line ``make run`` prints (pure parts).

Seeding and progress against the real stack: tests/test_make_run.py.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

import demo
from models.identifiers import make_iccid, validate_iccid
from simulators import esimgo, telna, webbing


def test_fleet_is_two_dozen_fixed_esims_across_the_three_carriers_on_compressed_passes() -> None:
    fleet = demo.demo_fleet()
    catalogue = (
        {f"telna-{p.id}": p for p in telna.CATALOGUE}
        | {f"webbing-{p.id}": p for p in webbing.CATALOGUE}
        | {f"esimgo-{p.id}": p for p in esimgo.CATALOGUE}
    )

    assert len(fleet) == 24
    assert fleet == demo.demo_fleet()  # the same ICCIDs on every run
    assert len({e.iccid for e in fleet}) == 24
    assert all(validate_iccid(e.iccid) == e.iccid for e in fleet)
    assert [e.carrier for e in fleet[:3]] == ["telna", "webbing", "esimgo"]  # alternating
    assert Counter(e.carrier for e in fleet) == {"telna": 8, "webbing": 8, "esimgo": 8}
    assert set(demo.CARRIER_PRODUCTS) == {"telna", "webbing", "esimgo"}
    assert all(e.product_id.startswith(e.carrier) for e in fleet)
    validities = Counter((e.carrier, catalogue[e.product_id].validity_seconds) for e in fleet)
    assert validities == {(c, 30): 6 for c in demo.CARRIERS} | {(c, 60): 2 for c in demo.CARRIERS}


def test_the_fleet_is_sold_to_three_customers_each_at_every_carrier() -> None:
    fleet = demo.demo_fleet()

    # Eight runs of three eSIMs, dealt to the customers in turn.
    assert Counter(e.customer for e in fleet) == {
        "acme-logistics": 9,
        "globex-fleet": 9,
        "initech-iot": 6,
    }
    for customer in demo.CUSTOMERS:
        assert {e.carrier for e in fleet if e.customer == customer} == set(demo.CARRIERS)


def test_a_fleet_of_an_earlier_make_run_is_not_asked_to_change_carrier() -> None:
    # The two-carrier fleet had 8944 0000 0000 9900 nn, Telna and Webbing alternating:
    # enrolling one of those ICCIDs at eSIM Go now would be refused (esim_conflict).
    before = {make_iccid(f"8944000000009900{n:02d}") for n in range(24)}

    assert not before & {e.iccid for e in demo.demo_fleet()}


def test_heavy_users_are_where_the_carrier_tells_of_usage_at_once() -> None:
    heavy = [e for e in demo.demo_fleet() if e.heavy]

    # Telna's usage webhooks move the switch early; eSIM Go starts the next queued bundle
    # itself once a pass is used up. Webbing is polled: none there.
    assert Counter(e.carrier for e in heavy) == {"telna": 4, "esimgo": 2}


def test_operator_key_is_found_among_the_api_keys() -> None:
    assert demo.operator_key("service:s1, operator:o1,operator:o2") == "o1"
    assert demo.operator_key("service:s1") is None
    assert demo.operator_key("") is None


def progress(rotations: int = 0, failing: int = 0) -> demo.Progress:
    return demo.Progress(24, rotations, rotations // 2, 0.0, failing)


def test_progress_prints_changes_at_most_every_ten_seconds_but_failing_at_once() -> None:
    printer = demo.ProgressPrinter(every=10.0)

    first = printer.line(progress(), now=100.0)
    unchanged = printer.line(progress(), now=105.0)
    too_soon = printer.line(progress(rotations=3), now=106.0)
    failing = printer.line(progress(rotations=3, failing=1), now=107.0)
    still_soon = printer.line(progress(rotations=4, failing=1), now=116.5)
    later = printer.line(progress(rotations=5, failing=1), now=117.5)

    assert first == "24 balances · rotations 0 (0 early by usage) · gap 0 s · failing 0"
    assert unchanged is None
    assert too_soon is None
    assert failing == "24 balances · rotations 3 (1 early by usage) · gap 0 s · failing 1"
    assert still_soon is None
    assert later is not None and "rotations 5" in later


def test_progress_line_says_what_the_api_does_not_serve() -> None:
    line = demo.progress_line(demo.Progress(3, 7, None, None, 0))

    assert line == "3 balances · rotations 7 · gap n/a · failing 0"


def balance(n: int, state: str, rotations: int, closed: bool = False) -> dict[str, Any]:
    at = "2026-11-26T00:00:00Z" if closed else None
    return {"id": f"bal_{n:012x}", "state": state, "rotations": rotations, "closed_at": at}


class FakeApi:
    """The two reads progress makes: balances in pages of two, and maybe continuity."""

    def __init__(self, continuity: dict[str, Any] | None) -> None:
        self.balances = [
            balance(1, "Active", 4),
            balance(2, "Failing", 2),
            balance(3, "Cancelled", 9, closed=True),
        ]
        self.continuity = continuity
        self.since: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/balances":
            start = int(request.url.params.get("cursor", 0))
            more = start + 2 < len(self.balances)
            page = {
                "data": self.balances[start : start + 2],
                "next_cursor": str(start + 2) if more else None,
            }
            return httpx.Response(200, json=page)
        self.since.append(request.url.params["since"])
        if self.continuity is None:
            return httpx.Response(404, json={"error": {"code": "not_found", "message": "no"}})
        return httpx.Response(200, json=self.continuity)


def test_progress_reads_the_continuity_report_since_the_start() -> None:
    report = {"total": {"rotations": 5, "early_rotations": 2, "gap_seconds": 1.5}, "carriers": {}}
    fake = FakeApi(report)
    began = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)

    with httpx.Client(base_url="http://api", transport=httpx.MockTransport(fake)) as api:
        got = demo.read_progress(api, began)

    assert got == demo.Progress(2, 5, 2, 1.5, 1)
    assert fake.since == [began.isoformat()]


def test_progress_without_a_continuity_report_counts_the_balances_rotations() -> None:
    fake = FakeApi(None)

    with httpx.Client(base_url="http://api", transport=httpx.MockTransport(fake)) as api:
        got = demo.read_progress(api, datetime.now(UTC))

    assert got == demo.Progress(2, 15, None, None, 1)


class FakeEnrolment:
    """The API and simulators as seeding meets them; the answer to one enrolment is lost
    after the balance was started."""

    def __init__(self, fleet: list[demo.DemoEsim], lose: str) -> None:
        self.products = [
            {"id": e.product_id, "allowance_bytes": 10**9, "validity_seconds": 300} for e in fleet
        ]
        self.lose = lose
        self.open: set[str] = set()
        self.customers: dict[str, str] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/products":
            return httpx.Response(200, json={"data": self.products})
        if request.url.path == "/v1/balances":
            iccid = json.loads(request.content)["iccid"]
            known = iccid in self.open
            self.open.add(iccid)
            if iccid == self.lose and not known:
                raise httpx.ReadTimeout("the answer was lost", request=request)
            return httpx.Response(200 if known else 201, json={})
        if request.url.path == "/v1/esims":
            body = json.loads(request.content)
            self.customers[body["iccid"]] = body["customer_ref"]
            return httpx.Response(201, json={})
        return httpx.Response(200, json={})


def test_seeding_again_after_a_lost_answer_counts_that_balance_as_started_not_reused() -> None:
    fleet = demo.demo_fleet()
    fake = FakeEnrolment(fleet, lose=fleet[5].iccid)
    transport = httpx.MockTransport(fake)
    started: set[str] = set()

    with httpx.Client(base_url="http://api", transport=transport) as api:
        sims = {c: httpx.Client(base_url=f"http://{c}", transport=transport) for c in demo.CARRIERS}
        with pytest.raises(httpx.ReadTimeout):
            demo.seed(api, sims, fleet, started=started)
        seeded = demo.seed(api, sims, fleet, started=started)
        again = demo.seed(api, sims, fleet)  # the next `make run`

    assert seeded == demo.Seeded(new=len(fleet), reused=0)
    assert again == demo.Seeded(new=0, reused=len(fleet))
    # Each eSIM is registered with its customer, so its balances report spend under it.
    assert fake.customers == {e.iccid: e.customer for e in fleet}


def test_seeding_starts_nothing_until_every_product_of_the_fleet_is_in_the_catalogue() -> None:
    fleet = demo.demo_fleet()
    fake = FakeEnrolment(fleet, lose="")
    fake.products = [p for p in fake.products if p["id"].startswith("telna")]
    transport = httpx.MockTransport(fake)

    with httpx.Client(base_url="http://api", transport=transport) as api:
        sims = {c: httpx.Client(base_url=f"http://{c}", transport=transport) for c in demo.CARRIERS}
        with pytest.raises(demo.DemoError, match="esimgo-esim_3MB_30S_SIM, .*webbing-90"):
            demo.seed(api, sims, fleet)

    assert fake.open == set()
