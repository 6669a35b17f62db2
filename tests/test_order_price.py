"""What a line cost is recorded when it is ordered: the carrier's own answer where it
says, else the catalogue's price at that moment, else the product spec's; a line adopted
after a lost answer or read back after an unreported purchase is priced alike."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from temporalio.testing import ActivityEnvironment

from activities.carrier import CarrierActivities, merged
from carriers.base import CarrierLine
from models.claims import OrderClaims
from models.db import migrate, session_scope
from models.payloads import Line, ProductSpec
from models.prices import CataloguePrices, Price, line_price
from models.tables import Product
from tests.test_carrier_heartbeats import OrderingCarrier, order_input

SPEC = ProductSpec(
    id="telna-daily-1gb",
    carrier="telna",
    carrier_product_id="daily-1gb",
    allowance_bytes=10**9,
    validity_seconds=86_400,
    price_cents=150,
    currency="USD",
)
BLANK = Line(
    seq=1,
    reference="b:1",
    product_id=SPEC.id,
    carrier_product_id=SPEC.carrier_product_id,
    allowance_bytes=10**9,
    validity_seconds=86_400,
)


@pytest.mark.parametrize(
    ("carrier_said", "catalogue", "expected"),
    [
        ((199, "GBP"), Price(175, "EUR"), (199, "GBP")),  # the carrier's own answer first
        (None, Price(175, "EUR"), (175, "EUR")),  # else the catalogue's now
        (None, None, (150, "USD")),  # else the spec's (a product gone from the table)
        (None, Price(0, "USD"), (0, "USD")),  # a free pass costs 0, known
    ],
)
def test_a_line_is_priced_by_the_carrier_then_the_catalogue_then_the_spec(
    carrier_said: tuple[int, str] | None, catalogue: Price | None, expected: tuple[int, str]
) -> None:
    line = BLANK
    if carrier_said is not None:
        cents, currency = carrier_said
        line = line.model_copy(update={"price_cents": cents, "currency": currency})
    priced = line_price(line, catalogue, SPEC)
    assert (priced.price_cents, priced.currency) == expected


def test_a_carrier_answer_without_a_price_leaves_the_lines_price_as_it_was() -> None:
    priced = BLANK.model_copy(update={"price_cents": 150, "currency": "USD"})
    found = CarrierLine(
        line_id="pkg-1",
        iccid="8944000000000000001",
        carrier_product_id="daily-1gb",
        reference=None,
        status="active",
        ordered_at=datetime.now(UTC),
        allowance_bytes=10**9,
    )
    assert (merged(priced, found).price_cents, merged(priced, found).currency) == (150, "USD")
    billed = found.model_copy(update={"price_cents": 120, "currency": "EUR"})
    assert (merged(BLANK, billed).price_cents, merged(BLANK, billed).currency) == (120, "EUR")


def _catalogue(url: str, cents: int, currency: str) -> None:
    with session_scope(url) as session:
        product = session.get(Product, "telna-daily-1gb") or Product(
            id="telna-daily-1gb",
            carrier="telna",
            carrier_product_id="daily-1gb",
            name="Daily 1 GB",
            allowance_bytes=10**9,
            validity_seconds=86_400,
            throttle_kbps=128,
            price_cents=0,
        )
        product.price_cents, product.currency = cents, currency
        session.add(product)


def _activities(url: str, carrier: OrderingCarrier, owner: str) -> CarrierActivities:
    claims = OrderClaims(url, request_seconds=1.0, owner=owner)
    return CarrierActivities({"telna": carrier}, claims, CataloguePrices(url))  # type: ignore[dict-item]


async def test_an_order_takes_the_catalogues_price_at_that_moment(database_url: str) -> None:
    migrate(database_url)
    _catalogue(database_url, 175, "EUR")  # synced since the balance took the product
    bought = await ActivityEnvironment().run(
        _activities(database_url, OrderingCarrier(0.0), "worker-a").order_line, order_input()
    )
    assert (bought.price_cents, bought.currency) == (175, "EUR")


async def test_a_line_read_back_after_an_unreported_purchase_is_priced_the_same(
    database_url: str,
) -> None:
    migrate(database_url)
    _catalogue(database_url, 175, "EUR")
    carrier = OrderingCarrier(0.0)
    first = await ActivityEnvironment().run(
        _activities(database_url, carrier, "worker-a").order_line, order_input()
    )
    # Temporal never heard of it: the retry, in another worker, reads the line back.
    again = await ActivityEnvironment().run(
        _activities(database_url, carrier, "worker-b").order_line, order_input()
    )
    assert again.line_id == first.line_id and len(carrier.placed) == 1
    assert (again.price_cents, again.currency) == (175, "EUR")


async def test_without_a_catalogue_the_specs_price_is_taken() -> None:
    activities = CarrierActivities({"telna": OrderingCarrier(0.0)})  # type: ignore[dict-item]
    bought = await ActivityEnvironment().run(activities.order_line, order_input())
    assert (bought.price_cents, bought.currency) == (0, "USD")  # DAILY's spec: the defaults
