"""The spend ledger as the API returns it: groups of purchases and what they cost."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, Field

from models.spend import GroupBy


class CurrencySpend(BaseModel):
    """What a set of purchases cost in one currency."""

    currency: str | None = Field(
        description="ISO 4217 code (null: lines of a product no longer in the catalogue "
        "bought before prices were recorded)",
        examples=["USD"],
    )
    amount: str | None = Field(
        description="What the priced lines cost, net of refunds: what the carriers will "
        "bill, in major units with two decimals (null: none is priced)",
        examples=["12.50"],
    )
    amount_cents: int | None = Field(description="The same in minor units", examples=[1250])
    lines: int = Field(description="Passes bought")
    unpriced_lines: int = Field(
        description="Of them, bought before prices were recorded: their cost is unknown "
        "(not 0), so `amount` is a lower bound when this is not 0"
    )
    refunded: str = Field(
        description="What carriers credited back to the account for lines they ended "
        "unused (eSIM Go's refund of a revoked bundle to balance), already taken off "
        "`amount`; a bundle returned to inventory is no refund",
        examples=["0.00"],
    )
    refunded_cents: int = Field(description="The same in minor units", examples=[0])


class SpendGroup(CurrencySpend):
    """One group's purchases in one currency."""

    key: str | None = Field(
        description="The carrier, product id, UTC day (YYYY-MM-DD) or customer_ref "
        "(null: balances without one)",
        examples=["telna"],
    )


class SpendReport(BaseModel):
    """What the chain cost: purchases grouped, by key then currency."""

    group_by: GroupBy
    since: date | None = Field(description="First UTC day counted (null: from the start)")
    until: date | None = Field(description="Last UTC day counted (null: to now)")
    groups: list[SpendGroup]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next groups")


CSV_COLUMNS = (
    "currency",
    "amount",
    "amount_cents",
    "lines",
    "unpriced_lines",
    "refunded",
    "refunded_cents",
)
