"""eSIMs as the API takes and returns them."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, field_validator

from api.schemas.balances import BalancePublic
from api.schemas.common import STRICT_INPUT, CarrierName, CustomerRef, Eid, Iccid
from models.identifiers import validate_customer_ref, validate_eid, validate_iccid


class EsimBase(BaseModel):
    iccid: Iccid
    carrier: CarrierName
    eid: Eid | None = None
    customer_ref: CustomerRef | None = None


class EsimCreate(EsimBase):
    """Register an eSIM with its carrier."""

    model_config = STRICT_INPUT

    @field_validator("iccid")
    @classmethod
    def _iccid(cls, value: str) -> str:
        return validate_iccid(value)

    @field_validator("eid")
    @classmethod
    def _eid(cls, value: str | None) -> str | None:
        return None if value is None else validate_eid(value)

    @field_validator("customer_ref")
    @classmethod
    def _customer_ref(cls, value: str | None) -> str | None:
        return None if value is None else validate_customer_ref(value)


class EsimPublic(EsimBase):
    """An eSIM and its open balance, if any."""

    id: str
    created_at: datetime
    open_balance: BalancePublic | None
