"""What a line cost when it was bought: the rule that picks its price, and the catalogue's
price of a product now (its row), which that rule falls back on.

A purchase is priced once, when the order returns it (``activities/carrier.py``): the
carrier's own answer where it says (eSIM Go's order ``total`` and ``currency``), else the
catalogue's current price of the product (the row the last sync wrote), else the price in
the product spec the balance carries (the catalogue's when the balance took the product:
a product no longer in the table). The store writes it once (``activities/store.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from models.db import session_scope
from models.payloads import Line, ProductSpec
from models.tables import Product

PRODUCTS: sa.Table = Product.__table__  # type: ignore[attr-defined]
_PRICE_OF = sa.select(PRODUCTS.c.price_cents, PRODUCTS.c.currency).where(
    PRODUCTS.c.id == sa.bindparam("product_id")
)


@dataclass(frozen=True)
class Price:
    """An amount in minor units (cents) of an ISO 4217 currency."""

    cents: int
    currency: str


def line_price(line: Line, catalogue: Price | None, spec: ProductSpec) -> Line:
    """``line`` with its purchase priced: a price it already has (the carrier's answer)
    stands; else the catalogue's now; else the spec's."""
    if line.price_cents is not None and line.currency is not None:
        return line
    price = catalogue or Price(spec.price_cents, spec.currency)
    return line.model_copy(update={"price_cents": price.cents, "currency": price.currency})


class CataloguePrices:
    """The catalogue's price of a product now, read from its row at ``database_url``."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    def of(self, product_id: str) -> Price | None:
        """The product's price, or None if the catalogue does not hold it."""
        with session_scope(self._url) as session:
            row = session.execute(_PRICE_OF, {"product_id": product_id}).first()
        return None if row is None else Price(int(row.price_cents), str(row.currency))
