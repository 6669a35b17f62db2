"""The product catalogue as the API returns it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from api.schemas.common import CarrierName


class ProductPublic(BaseModel):
    """A carrier's data pass, synced from the carrier's catalogue."""

    id: str
    carrier: CarrierName
    carrier_product_id: str
    name: str
    allowance_bytes: int
    validity_seconds: int
    reset: str
    reset_utc_offset_minutes: int
    throttle_kbps: int
    price_cents: int = Field(description="One pass's price, in minor units of `currency`")
    currency: str = Field(description="ISO 4217 code of `price_cents`", examples=["USD"])
    rotation: Literal["queued", "activated", "in_place"] = Field(
        description="how its carrier moves to the next pass: queued (the carrier starts the "
        "next one as this one ends), activated (we start it), in_place (a product change)"
    )
    synced_at: datetime


class ProductsPublic(BaseModel):
    data: list[ProductPublic]
    count: int
