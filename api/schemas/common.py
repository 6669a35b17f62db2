"""Field shapes shared by the request and response models."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Path
from pydantic import ConfigDict, Field

from models.identifiers import CUSTOMER_REF_PATTERN, make_eid, make_iccid

CarrierName = Literal["telna", "webbing", "esimgo"]

# Requests: unknown fields and loose types (``"5"`` for 5, ``true`` for 1) are refused.
STRICT_INPUT = ConfigDict(extra="forbid", strict=True)

ICCID_PATTERN = r"^89[0-9]{17,18}$"
BALANCE_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
# Free text and catalogue ids: anything printable (no NUL, which PostgreSQL refuses).
PRINTABLE_PATTERN = r"^[^\x00-\x1f\x7f]*$"
EID_PATTERN = r"^[0-9]{32}$"
EXAMPLE_ICCID = make_iccid("894400000000000001")
EXAMPLE_EID = make_eid("890490320000000000000000000000")

Iccid = Annotated[
    str,
    Field(
        description="19 or 20 digits starting with 89; the last is a Luhn check digit",
        json_schema_extra={"pattern": ICCID_PATTERN},
        examples=[EXAMPLE_ICCID],
    ),
]
Eid = Annotated[
    str,
    Field(
        description="32 digits whose number is 1 modulo 97 (ISO 7064 MOD 97-10)",
        json_schema_extra={"pattern": EID_PATTERN},
        examples=[EXAMPLE_EID],
    ),
]
CustomerRef = Annotated[
    str,
    Field(
        description="The operator's own customer reference (spend is reported per customer)",
        json_schema_extra={"pattern": CUSTOMER_REF_PATTERN, "maxLength": 64},
        examples=["ACME-0042"],
    ),
]
ProductId = Annotated[
    str,
    Field(
        min_length=1,
        max_length=96,
        pattern=PRINTABLE_PATTERN,
        description="Our product id, `{carrier}-{carrier product id}`",
        examples=["telna-daily-1gb"],
    ),
]
BalanceIdPath = Annotated[
    str,
    Path(min_length=1, max_length=64, pattern=BALANCE_ID_PATTERN, examples=["bal_0123456789ab"]),
]
