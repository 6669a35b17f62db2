"""Telna usage and status webhooks: verify the signature, then signal the balance.

The carrier signs ``f"{t}.{raw body}"`` with HMAC-SHA256 and the shared secret and sends
``Telna-Signature: t=<unix seconds>,v1=<hex>``. A signature older or newer than five
minutes is refused, so a captured request cannot be replayed later, nor its signature
put on another body. Within the five minutes a replay is a duplicate: the route answers
it without a second signal (``event_id`` is remembered). Out-of-order deliveries are
harmless too: the workflow ignores usage older than what it has.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from models import signature

# Re-exported: the route and the tests know the scheme by this module.
from models.signature import TOLERANCE_SECONDS as TOLERANCE_SECONDS
from models.signature import SignatureError as SignatureError
from models.signature import sign as sign

MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class EventDetails(BaseModel):
    iccid: str = Field(max_length=32)
    package_id: str = Field(max_length=128)
    customer_ref: str | None = Field(default=None, max_length=128)
    threshold_percent: int | None = None
    data_usage: int = Field(default=0, ge=0)
    data_usage_allowance: int = Field(default=0, ge=0)
    data_usage_remaining: int = Field(default=0, ge=0)
    status: str | None = None


class TelnaEvent(BaseModel):
    """One webhook delivery as the Telna-like carrier sends it."""

    event_id: str = Field(min_length=1, max_length=128)
    event: str = Field(max_length=64)
    timestamp: int = Field(ge=0, le=MAX_TIMESTAMP_MS, description="epoch milliseconds")
    eventDetails: EventDetails  # noqa: N815  (the carrier's field name)

    @property
    def observed_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)


def verify(secret: str, header: str | None, body: bytes, now: float | None = None) -> None:
    """Raise ``SignatureError`` unless ``header`` signs ``body`` within the tolerance."""
    signature.verify(secret, header, body, now, name="Telna-Signature")


def parse(body: bytes) -> TelnaEvent:
    """The event in ``body``; ``ValueError`` with one line if it is not one."""
    try:
        return TelnaEvent.model_validate(json.loads(body))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("body is not JSON") from None
    except ValidationError as error:
        first: dict[str, Any] = dict(error.errors()[0])
        raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def balance_line(event: TelnaEvent) -> tuple[str, int] | None:
    """(balance id, seq) from our reference ``{balance_id}:{seq}``, if the package has one."""
    ref = event.eventDetails.customer_ref or ""
    balance_id, _, seq = ref.rpartition(":")
    if not balance_id or not seq.isdigit():
        return None
    return balance_id, int(seq)
