"""Balances and their lines as the API takes and returns them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.schemas.common import (
    PRINTABLE_PATTERN,
    STRICT_INPUT,
    CarrierName,
    CustomerRef,
    Iccid,
    ProductId,
)
from api.schemas.spend import CurrencySpend
from models.continuity import Continuity
from models.identifiers import validate_customer_ref, validate_iccid
from models.payloads import BalanceStatus, LineState, Policy
from services.enrolment import MAX_LINES


class BalanceBase(BaseModel):
    iccid: Iccid
    product_id: ProductId


class BalanceCreate(BalanceBase):
    """Start a balance: the eSIM (registered first) on a product of its carrier."""

    model_config = STRICT_INPUT

    lines: int | None = Field(
        default=None, ge=1, le=MAX_LINES, description="Term in lines; omitted: until cancelled"
    )
    policy: Policy | None = Field(default=None, description="Omitted: the defaults")
    customer_ref: CustomerRef | None = Field(default=None, description="Omitted: the eSIM's")

    @field_validator("iccid")
    @classmethod
    def _iccid(cls, value: str) -> str:
        return validate_iccid(value)

    @field_validator("customer_ref")
    @classmethod
    def _customer_ref(cls, value: str | None) -> str | None:
        return None if value is None else validate_customer_ref(value)


class BalanceUpdate(BaseModel):
    """Change a balance from its next line on; give at least one field."""

    model_config = STRICT_INPUT | ConfigDict(
        json_schema_extra={
            "examples": [
                {"product_id": "telna-daily-1gb"},
                {"policy": {"max_lines_per_day": 24}},
            ]
        }
    )

    product_id: ProductId | None = Field(
        default=None, description="Another product of the same carrier, for the next lines"
    )
    policy: Policy | None = Field(
        default=None, description="Replaces the whole policy (omitted fields: defaults)"
    )

    @model_validator(mode="after")
    def _something(self) -> BalanceUpdate:
        if self.product_id is None and self.policy is None:
            raise ValueError("give product_id or policy")
        return self


class ActionBody(BaseModel):
    """Optional body of an operator action: why, for the ledger."""

    model_config = STRICT_INPUT

    reason: str = Field(default="", max_length=200, pattern=PRINTABLE_PATTERN)


class RotateBody(ActionBody):
    """Optional body of ``rotate``: ``force`` rotates even past the day's cost cap."""

    force: bool = False


class BalancePublic(BalanceBase):
    """A balance as the database mirrors its workflow."""

    id: str = Field(examples=["bal_0123456789ab"])
    carrier: CarrierName
    next_product_id: str | None
    lines_total: int | None
    policy: Policy
    state: BalanceStatus
    workflow_id: str
    line_seq: int | None = Field(description="Sequence number of the active line")
    line_ends_at: datetime | None
    rotations: int
    paused: bool
    capped: bool
    failing_reason: str | None
    customer_ref: CustomerRef | None = None
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class LinePublic(BaseModel):
    """One Balance Line: a carrier package with a time window."""

    id: str = Field(description="Our order reference `{balance_id}:{seq}`")
    seq: int
    state: LineState
    product_id: str
    carrier_line_id: str | None = Field(description="The carrier's package id")
    allowance_bytes: int
    used_bytes: int
    ordered_at: datetime | None
    activated_at: datetime | None
    ends_at: datetime | None
    ended_at: datetime | None
    exhausted_at: datetime | None = Field(
        default=None,
        description=(
            "When the carrier saw the allowance used up: throttled after (Webbing), or"
            " ended then (Telna)"
        ),
    )
    price_cents: int | None = Field(
        default=None,
        description="What buying it cost, in minor units of `currency` (null: bought before "
        "prices were recorded, or not bought yet)",
    )
    currency: str | None = Field(default=None, examples=["USD"])


class BalanceDetail(BalancePublic):
    """A balance with a page of its lines, newest first, and its figures over a window."""

    lines: list[LinePublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next (older) lines")
    continuity_since: datetime = Field(description="The figures measure only time after it")
    continuity: Continuity | None = Field(
        default=None, description="Figures from carrier-confirmed times (null: no line yet)"
    )
    spend: list[CurrencySpend] = Field(
        default=[],
        description="What every pass it bought cost, per currency (GET /v1/spend's figures)",
    )


class BalancesPublic(BaseModel):
    """One page of balances, newest first."""

    data: list[BalancePublic]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page")
