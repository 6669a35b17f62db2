"""eSIM Go's V3 usage callback (record 3.6): engine alerts as signed POSTs.

``FirstUse`` once, when a bundle has carried its first kilobyte, then ``Utilisation`` at
50, 80 and 100 % used (FirstUse stands for the 1 % alert). The body is
``{iccid, alertType, bundle: {id, reference, name, description, initialQuantity,
remainingQuantity, startTime, endTime, unlimited}}`` (bytes, RFC 3339 UTC); the header
``X-Signature-SHA256`` is the HMAC-SHA256 of the raw body keyed with the API key, hex by
default or base64 (``/_sim/esimgo {signature_encoding}``). Delivery, retries, duplicates
and delays are :mod:`simulators.webhooks`'; the target is ``/_sim/config {webhook_url}``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from simulators.esimgo_account import Account, SignatureEncoding
from simulators.esimgo_views import rfc3339
from simulators.records import FIRST_USE, Alert
from simulators.webhooks import WebhookDispatcher

FIRST_USE_BYTES = 1000  # "to the nearest 1 KB"
UTILISATION = (50, 80, 100)


def sign(body: bytes, key: str, encoding: SignatureEncoding) -> str:
    digest = hmac.new(key.encode(), body, hashlib.sha256).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def callback_body(alert: Alert, account: Account) -> dict[str, Any] | None:
    """The V3 callback an engine alert is sent as, if eSIM Go sends one for it."""
    if alert.kind != "usage_threshold":
        return None  # no callback for an ending in the public list
    if alert.threshold_percent == FIRST_USE:
        kind = "FirstUse"
    elif alert.threshold_percent in UTILISATION:
        kind = "Utilisation"
    else:
        return None
    product = account.engine.products.get(alert.product_id)
    return {
        "iccid": alert.iccid,
        "alertType": kind,
        "bundle": {
            "id": alert.package_id,
            "reference": account.references.get(alert.package_id, ""),
            "name": alert.product_id,
            "description": product.name if product else alert.product_id,
            "initialQuantity": alert.allowance_bytes,
            "remainingQuantity": max(0, alert.allowance_bytes - alert.used_bytes),
            "startTime": rfc3339(alert.activated_at),
            "endTime": rfc3339(alert.expires_at),
            "unlimited": False,
        },
    }


class Callbacks:
    """The engine's alert sink: posts each callback to the configured URL, signed."""

    def __init__(self, dispatcher: WebhookDispatcher, api_key: str) -> None:
        self.dispatcher = dispatcher
        self.api_key = api_key
        self.account: Account | None = None

    def __call__(self, alert: Alert) -> None:
        url = self.dispatcher.target.url
        if url is None or self.account is None:
            return
        payload = callback_body(alert, self.account)
        if payload is None:
            return
        body = json.dumps(payload, separators=(",", ":")).encode()
        signature = sign(body, self.api_key, self.account.config.signature_encoding)
        headers = {"Content-Type": "application/json", "X-Signature-SHA256": signature}
        self.dispatcher.submit(url, body, headers)
