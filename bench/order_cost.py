"""What one order costs at the carrier, for an eSIM one day old and one a year old.

An order (``CarrierActivities.order_line``, run as Temporal runs it, with its claims in
a SQLite file as a worker keeps them) buys at once when no order for the line ever left;
after an order whose answer was lost, it first looks for the package that order may have
made (an open package of the product, made since), and adopts it. DESIGN section 5 asks
that looking cost the same whatever the eSIM's age; this prints the carrier calls and the
bytes on the wire (requests and answers) of both, on an eSIM with one earlier package and
on one with a package a day for a year (``--days``), on each simulator (its own process,
real HTTP).

At eSIM Go the eSIMs are marked installed (as a device that installed the profile: else
revoking an eSIM's last bundle sends it to eSIM Go's returns process), each earlier
bundle is revoked once it has started, and the simulator's rate limit is off while the
year is bought (thousands of calls) and back at its default for the orders measured.

    python -m bench.order_cost [--days 365] [--json order-cost.json]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from temporalio.testing import ActivityEnvironment

from activities.carrier import CarrierActivities
from bench.common import bench_iccids, carrier_clients, report, start_simulator, stop
from carriers.base import Carrier
from models.claims import OrderClaims
from models.db import migrate
from models.payloads import Line, OrderLineInput, ProductSpec
from ports import free_port

CARRIERS = ("telna", "webbing", "esimgo")


class Counting(httpx.AsyncBaseTransport):
    """Counts the requests through it and the bytes they send and receive."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.counting = False
        self.calls = 0
        self.bytes = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        if self.counting:
            self.calls += 1
            self.bytes += len(request.content) + len(body)
        return httpx.Response(
            response.status_code, headers=response.headers, content=body, request=request
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _product(carrier: Carrier) -> ProductSpec:
    """The shortest rolling pass the carrier sells: a year of them is bought in seconds."""
    products = [p for p in await carrier.list_products() if p.reset == "rolling"]
    p = min(products, key=lambda p: p.validity_seconds)
    return ProductSpec(
        id=f"{carrier.name}-{p.carrier_product_id}",
        carrier=carrier.name,
        carrier_product_id=p.carrier_product_id,
        allowance_bytes=p.allowance_bytes,
        validity_seconds=p.validity_seconds,
        reset=p.reset,
        rotation=p.rotation,
    )


def _input(balance: str, iccid: str, seq: int, spec: ProductSpec) -> OrderLineInput:
    return OrderLineInput(
        balance_id=balance, iccid=iccid, carrier=spec.carrier, seq=seq, product=spec
    )


async def _order(acts: CarrierActivities, req: OrderLineInput) -> Line:
    line: Line = await ActivityEnvironment().run(acts.order_line, req)
    return line


async def _age(
    acts: CarrierActivities,
    carrier: Carrier,
    balance: str,
    iccid: str,
    packages: int,
    spec: ProductSpec,
) -> None:
    """``packages`` earlier packages on ``iccid``, each bought, started and ended."""
    for seq in range(1, packages + 1):
        line = await _order(acts, _input(balance, iccid, seq, spec))
        assert line.line_id is not None
        await carrier.deactivate(await _started(carrier, line.line_id, spec))


async def _started(carrier: Carrier, line_id: str, spec: ProductSpec) -> str:
    """The line's id once started. A change of product in place takes effect after the
    carrier's latency, and only then shows; a queued bundle starts by itself once the
    carrier has processed it (the eSIM has no other): both are waited for."""
    found = await carrier.activate(line_id)
    for _ in range(400):
        if found.status != "scheduled" or spec.rotation not in ("in_place", "queued"):
            return found.line_id
        await asyncio.sleep(0.05)
        found = await carrier.get_line(line_id)
    raise AssertionError(f"{line_id} never started")


async def _lost_answer(claims: OrderClaims, carrier: Carrier, req: OrderLineInput) -> str:
    """An order for ``req`` that left and was committed, its answer lost: the claim says
    it was sent, and no attempt knows what it bought (its id is returned)."""
    claim = claims.take(req.reference)
    claims.hand_back(claims.sending(claim, timedelta(seconds=carrier.in_doubt_seconds)))
    return (await carrier.order(req.iccid, req.product.carrier_product_id, req.reference)).line_id


@asynccontextmanager
async def _rate_limit_off(url: str, limit: int | None) -> AsyncIterator[None]:
    """eSIM Go's simulator without its rate limit meanwhile, then at ``limit`` again."""
    async with httpx.AsyncClient() as http:
        off = {"rate_limit_tokens": None}
        (await http.post(f"{url}/_sim/esimgo", json=off)).raise_for_status()
        try:
            yield
        finally:
            back = {"rate_limit_tokens": limit}
            (await http.post(f"{url}/_sim/esimgo", json=back)).raise_for_status()


async def measure(carrier_name: str, days: int, tmp: Path) -> dict[str, Any]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    sim = start_simulator(carrier_name, port, tmp / f"{carrier_name}.log")
    try:
        counter = Counting()
        sims = dict.fromkeys(CARRIERS, "http://127.0.0.1:9") | {carrier_name: url}
        carrier = carrier_clients(sims, 0.0, lambda _: counter)[carrier_name]
        database = f"sqlite:///{tmp / carrier_name}.db"
        migrate(database)
        claims = OrderClaims(database, request_seconds=10.0)
        acts = CarrierActivities({carrier_name: carrier}, claims)
        spec = await _product(carrier)
        young, old = bench_iccids(2)
        async with httpx.AsyncClient() as http:
            (await http.post(f"{url}/_sim/esims", json={"iccids": [young, old]})).raise_for_status()
            if carrier_name == "esimgo":
                installed = {"iccids": [young, old], "installed": True}
                (await http.post(f"{url}/_sim/esimgo/installed", json=installed)).raise_for_status()
                limit = (await http.get(f"{url}/_sim/esimgo")).json()["rate_limit_tokens"]
        figures: dict[str, Any] = {}
        for label, iccid, packages in (("one_day", young, 1), ("one_year", old, days)):
            balance = f"bal_{uuid.uuid4().hex[:12]}"
            if carrier_name == "esimgo":
                async with _rate_limit_off(url, limit):
                    await _age(acts, carrier, balance, iccid, packages, spec)
            else:
                await _age(acts, carrier, balance, iccid, packages, spec)
            figures[label] = {"earlier_packages": packages}
            # The next line, bought at once; then the one after, whose first answer was
            # lost, ordered again while the first is the balance's line at the carrier.
            counter.counting, counter.calls, counter.bytes = True, 0, 0
            bought = await _order(acts, _input(balance, iccid, packages + 1, spec))
            figures[label]["order"] = {"calls": counter.calls, "bytes": counter.bytes}
            assert bought.line_id is not None
            counter.counting = False
            looked = _input(balance, iccid, packages + 2, spec)
            looked.known_line_ids = [await _started(carrier, bought.line_id, spec)]
            lost = await _lost_answer(claims, carrier, looked)
            if spec.rotation == "in_place":
                lost = await _started(carrier, lost, spec)
            counter.counting, counter.calls, counter.bytes = True, 0, 0
            adopted = await _order(acts, looked)
            figures[label]["look"] = {"calls": counter.calls, "bytes": counter.bytes}
            counter.counting = False
            assert adopted.line_id == lost, "the look must adopt the lost order's package"
        for kind in ("order", "look"):
            young_cost, old_cost = figures["one_day"][kind], figures["one_year"][kind]
            figures[f"{kind}_calls_ratio"] = round(old_cost["calls"] / young_cost["calls"], 2)
            figures[f"{kind}_bytes_ratio"] = round(old_cost["bytes"] / young_cost["bytes"], 2)
        await counter.aclose()
        return figures
    finally:
        stop(sim)


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.order_cost", description=__doc__)
    parser.add_argument("--days", type=int, default=365, help="packages on the older eSIM")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        result = {name: await measure(name, args.days, Path(tmp)) for name in CARRIERS}
    return report(result, args.json)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
