"""The worker's catalogue sync over the eSIM Go client it builds, against the simulator:
every bundle becomes the product ``esimgo-{bundle}``, rotated ``queued``, and a second
sync updates the rows in place."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlmodel import select

from carriers import build_carriers
from config import EsimGoSettings, Settings
from models.db import migrate, session_scope
from models.tables import Product
from services.catalog import sync_catalogue
from simulators import esimgo as esimgo_sim
from tests.servers import serve

KEY = "catalogue-key"


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    with serve(esimgo_sim.create_app(KEY, None, seed=3)) as url:
        yield url


async def test_the_sync_stores_every_bundle_as_a_queued_product(
    sim_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalogue.db'}"
    migrate(url)
    settings = Settings(
        esimgo=EsimGoSettings(base_url=f"{sim_url}/v2.4", api_key=SecretStr(KEY), currency="GBP"),
        database_url=url,
    )
    carrier = build_carriers(settings)["esimgo"]  # as the worker builds it
    try:
        assert await sync_catalogue({"esimgo": carrier}, url) == {
            "esimgo": len(esimgo_sim.CATALOGUE)
        }
        assert await sync_catalogue({"esimgo": carrier}, url) == {
            "esimgo": len(esimgo_sim.CATALOGUE)
        }
    finally:
        await carrier.aclose()

    with session_scope(url) as session:
        products = {p.id: p for p in session.exec(select(Product))}
    assert set(products) == {f"esimgo-{b.id}" for b in esimgo_sim.CATALOGUE}
    for bundle in esimgo_sim.CATALOGUE:
        stored = products[f"esimgo-{bundle.id}"]
        assert (stored.carrier, stored.carrier_product_id) == ("esimgo", bundle.id)
        assert stored.rotation == "queued"
        assert (stored.allowance_bytes, stored.validity_seconds) == (
            bundle.allowance_bytes,
            bundle.validity_seconds,
        )
        assert (stored.reset, stored.reset_utc_offset_minutes) == ("rolling", 0)
        assert stored.throttle_kbps == bundle.throttle_kbps
        assert stored.currency == "GBP"  # ESIMGO__CURRENCY: the catalogue names none
    day = products["esimgo-esim_1GB_1D_GB_V2"]
    assert (day.allowance_bytes, day.validity_seconds, day.price_cents) == (
        1_000_000_000,
        86_400,
        150,
    )
