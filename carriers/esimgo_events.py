"""eSIM Go's usage callbacks (V3): the signature check and the body, read as values.

eSIM Go posts a callback to the URL set in its portal (CARRIERS.md 3.6): ``FirstUse``
once when an eSIM first uses data, and ``Utilisation`` at 1, 50, 80 and 100 % of a
bundle used. V3 callbacks carry ``X-Signature-SHA256``: HMAC-SHA256 of the raw request
body keyed with the organisation's API key. The record's samples encode the digest in hex
and in base64 (``WIRE.webhook_digest``): both are accepted, and compared in constant time.
The same channel carries ``{date, event: "esim.deleted", iccid}``: read as
:class:`EsimEvent`. V2 callbacks (unsigned, no assignment id) are not read.

Pure: no I/O, nothing of the API. An API route verifies the raw body, then parses it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from carriers.esimgo_records import LineName, parse_time, whole

SIGNATURE_HEADER = "X-Signature-SHA256"
ALERT_TYPES = ("FirstUse", "Utilisation")
_DIGEST_BYTES = hashlib.sha256().digest_size


def verify_signature(raw_body: bytes, header: str | None, api_key: str) -> bool:
    """Whether ``header`` is the HMAC-SHA256 of ``raw_body`` keyed with ``api_key``, in
    hex or base64. No key or no header never verifies."""
    if not header or not api_key:
        return False
    expected = hmac.new(api_key.encode(), raw_body, hashlib.sha256).digest()
    matched = False
    for given in _decodings(header.strip()):
        # Every candidate is compared, so the time taken does not tell which one matched.
        matched |= hmac.compare_digest(expected, given)
    return matched


def _decodings(value: str) -> list[bytes]:
    """The 32-byte digests ``value`` can be read as: hex, base64."""
    found = []
    try:
        found.append(bytes.fromhex(value))
    except ValueError:
        pass
    try:
        found.append(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        pass
    return [d for d in found if len(d) == _DIGEST_BYTES]


@dataclass(frozen=True)
class UsageAlert:
    """A V3 usage callback: one assignment's quantities when it was sent."""

    iccid: str
    assignment_id: str
    alert_type: str
    bundle: str
    initial_bytes: int
    remaining_bytes: int
    start_time: datetime | None
    end_time: datetime | None
    reference: str | None = None

    @property
    def line_id(self) -> str:
        """The client's id of the line this alert is about (``carriers.esimgo``)."""
        return str(LineName(self.iccid, self.bundle, self.assignment_id))

    @property
    def used_bytes(self) -> int:
        return min(self.initial_bytes, max(0, self.initial_bytes - self.remaining_bytes))

    @property
    def dedupe_key(self) -> tuple[str, str, str, int]:
        """eSIM Go sends no event id: an alert repeated is the same four values."""
        return (self.iccid, self.assignment_id, self.alert_type, self.remaining_bytes)


@dataclass(frozen=True)
class EsimEvent:
    """Another notification on the channel, such as ``esim.deleted``."""

    event: str
    iccid: str
    date: datetime | None


def parse_callback(raw_body: bytes) -> UsageAlert | EsimEvent:
    """The callback's body as a value; ValueError if it is neither shape."""
    try:
        body = json.loads(raw_body)
    except ValueError as exc:
        raise ValueError(f"callback is no JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise ValueError("callback is no JSON object")
    try:
        if "event" in body:
            return EsimEvent(
                _text(body, "event"), _text(body, "iccid"), parse_time(body.get("date"))
            )
        return _alert(body)
    except (KeyError, TypeError) as exc:
        raise ValueError(f"unreadable callback: {exc!r}") from exc


def _alert(body: dict[str, Any]) -> UsageAlert:
    bundle = body["bundle"]
    if not isinstance(bundle, dict):
        raise ValueError("callback without a bundle object")
    if "id" not in bundle:
        raise ValueError("callback without bundle.id (a V2 callback: set V3 in the portal)")
    alert_type = _text(body, "alertType")
    if alert_type not in ALERT_TYPES:
        raise ValueError(f"unknown alertType {alert_type!r}")
    reference = bundle.get("reference")
    return UsageAlert(
        iccid=_text(body, "iccid"),
        assignment_id=str(bundle["id"]),
        alert_type=alert_type,
        bundle=_text(bundle, "name"),
        initial_bytes=whole(bundle["initialQuantity"]),
        remaining_bytes=whole(bundle["remainingQuantity"]),
        start_time=parse_time(bundle.get("startTime")),
        end_time=parse_time(bundle.get("endTime")),
        reference=str(reference) if reference is not None else None,
    )


def _text(data: dict[str, Any], key: str) -> str:
    value = data[key]
    if not isinstance(value, str) or not value:
        raise ValueError(f"{key} is no text: {value!r}")
    return value
