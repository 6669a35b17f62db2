"""Telna's Flex webhook events, as SNS delivers them, and what each means for a balance.

Two events matter (CARRIERS.md 2.5, 4.2). ``PACKAGE_DATA_USAGE_ALERT`` at 50 and 80 % of
a package's allowance carries its used and total bytes. ``PACKAGE_STATUS_CHANGE`` is
sent, in production, only when a package is terminated (expiry, data used up, ended
through the API). Neither names our order reference: a package is known by its id, the
carrier line id we keep for each line.

SNS either wraps an event (the envelope's ``Message`` is the event JSON as a string, the
envelope signed: ``api.sns``) or, with raw message delivery, posts the event itself with
``x-amz-sns-rawdelivery: true`` and nothing signed. Raw deliveries are then known by the
credentials of the subscription URL (``https://telna:<secret>@host/...``), which SNS
sends as HTTP Basic: the password must be ``TELNA__WEBHOOK_SECRET``.

Whichever way, a message is known by its SNS ``MessageId``, the same on every
redelivery: the route answers a second copy without a second signal. Late or
out-of-order copies are harmless too: the workflow ignores usage older than what it has,
and acts on a termination only while it still holds that line.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field, ValidationError, field_validator

USAGE_ALERT = "PACKAGE_DATA_USAGE_ALERT"
STATUS_CHANGE = "PACKAGE_STATUS_CHANGE"
TERMINATED = "TERMINATED"
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


class Sim(BaseModel):
    iccid: str = Field(min_length=1, max_length=32)


class Status(BaseModel):
    previous: str | None = Field(default=None, alias="previousValue", max_length=32)
    current: str | None = Field(default=None, alias="currentValue", max_length=32)


class Package(BaseModel):
    id: str = Field(min_length=1, max_length=64)
    used_bytes: int | None = Field(default=None, alias="packageUsedBytes", ge=0)
    total_bytes: int | None = Field(default=None, alias="packageTotalBytes", ge=0)
    status: Status | None = None

    @field_validator("id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        """A package id may come as a number: we keep it as the text the REST API shows."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class EventDetails(BaseModel):
    sim: Sim
    package: Package


class TelnaEvent(BaseModel):
    """One Telna event; sub-fields beyond these are not relied on (not public)."""

    name: str = Field(alias="eventName", min_length=1, max_length=64)
    timestamp: int = Field(alias="eventTimestamp", ge=0, le=MAX_TIMESTAMP_MS)
    details: EventDetails = Field(alias="eventDetails")

    @property
    def observed_at(self) -> datetime:
        return datetime.fromtimestamp(self.timestamp / 1000, UTC)

    @property
    def package_id(self) -> str:
        return self.details.package.id

    @property
    def used_up(self) -> bool:
        """A termination with the package's used bytes at its total: its data ran out
        (CARRIERS.md 2.6: one of the three reasons Telna ends a package)."""
        package = self.details.package
        return (
            self.terminated
            and package.used_bytes is not None
            and package.total_bytes is not None
            and package.total_bytes > 0
            and package.used_bytes >= package.total_bytes
        )

    @property
    def terminated(self) -> bool:
        status = self.details.package.status
        return self.name == STATUS_CHANGE and status is not None and status.current == TERMINATED


def parse(message: str | bytes) -> TelnaEvent:
    """The event in ``message``; ``ValueError`` with one line if it is not one."""
    try:
        event = TelnaEvent.model_validate(json.loads(message))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("event is not JSON") from None
    except ValidationError as error:
        first: dict[str, Any] = dict(error.errors()[0])
        raise ValueError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    if event.name == USAGE_ALERT and event.details.package.used_bytes is None:
        raise ValueError("eventDetails.package.packageUsedBytes: missing in a usage alert")
    return event


def basic_password_matches(authorization: str | None, secret: str) -> bool:
    """Whether ``Authorization: Basic`` carries ``secret`` as its password, compared as
    bytes in time independent of where they differ (a header arrives as latin-1 text
    holding whatever bytes the client sent). No secret configured matches nothing."""
    if not secret or not authorization:
        return False
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        decoded = base64.b64decode(encoded.strip().encode("latin-1"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return False
    _, colon, password = decoded.partition(b":")
    return bool(colon) and hmac.compare_digest(password, secret.encode())
