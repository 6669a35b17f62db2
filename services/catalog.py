"""Product catalogue sync: each carrier's passes into the Product table.

Runs when the worker starts and on demand (``starter.py products --sync``). Our product
id for a carrier product is ``{carrier}-{carrier_product_id}``.

A product no balance could run (``models.payloads.pass_problem``: an allowance or validity
of 0 or less) is left out: logged once per sync, counted in
``esim_catalogue_products_skipped``; a row synced before keeps its last good figures.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from carriers.base import Carrier, CarrierProduct
from carriers.errors import CarrierError
from models.db import dialect_insert, session_scope
from models.payloads import pass_problem
from models.tables import Product
from services.metrics import catalogue_skipped

log = logging.getLogger(__name__)


def product_id(carrier: str, carrier_product_id: str) -> str:
    return f"{carrier}-{carrier_product_id}"


async def sync_catalogue(carriers: Mapping[str, Carrier], database_url: str) -> dict[str, int]:
    """Upsert every carrier's products; returns products synced per carrier.

    A carrier that cannot be reached keeps its last synced catalogue (logged, not raised).
    """
    synced: dict[str, int] = {}
    for name, carrier in carriers.items():
        try:
            products = await carrier.list_products()
        except CarrierError as error:
            log.warning("catalogue sync of %s failed: %s", name, error)
            continue
        sellable = [item for item in products if _sellable(name, item)]
        _store(name, sellable, database_url)
        synced[name] = len(sellable)
    return synced


def _sellable(carrier: str, item: CarrierProduct) -> bool:
    problem = pass_problem(item.allowance_bytes, item.validity_seconds)
    if problem is None:
        return True
    pid = product_id(carrier, item.carrier_product_id)
    log.warning("catalogue sync of %s leaves out %s: %s", carrier, pid, problem)
    catalogue_skipped.labels(carrier).inc()
    return False


def _store(carrier: str, products: list[CarrierProduct], database_url: str) -> None:
    # An upsert: worker replicas starting together all sync, and must not collide.
    now = datetime.now(UTC)
    rows = [
        {
            "id": product_id(carrier, item.carrier_product_id),
            "carrier": carrier,
            "carrier_product_id": item.carrier_product_id,
            "name": item.name,
            "allowance_bytes": item.allowance_bytes,
            "validity_seconds": item.validity_seconds,
            "reset": item.reset,
            "reset_utc_offset_minutes": item.reset_utc_offset_minutes,
            "throttle_kbps": item.throttle_kbps,
            "price_cents": item.price_cents,
            "currency": item.currency,
            "rotation": item.rotation,
            "synced_at": now,
        }
        for item in products
    ]
    if not rows:
        return
    with session_scope(database_url) as session:
        insert = dialect_insert(session, Product)
        changing = set(rows[0]) - {"id", "carrier", "carrier_product_id"}
        session.execute(
            insert.on_conflict_do_update(
                index_elements=["id"], set_={name: insert.excluded[name] for name in changing}
            ),
            rows,
        )
