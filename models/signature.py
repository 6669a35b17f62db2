"""Our signed notifications out (and the constant-time text comparison others share).

The sender signs ``f"{t}.{raw body}"`` with HMAC-SHA256 and the shared secret and sends
``<Name>-Signature: t=<unix seconds>,v1=<hex>``. A receiver refuses a signature older or
newer than the tolerance, so a captured request cannot be replayed later, nor its
signature put on another body.
"""

from __future__ import annotations

import hashlib
import hmac
import time

TOLERANCE_SECONDS = 300


class SignatureError(ValueError):
    """The signature is missing, malformed, wrong or out of tolerance."""


def equal(given: str, expected: str) -> bool:
    """Whether two texts are equal, in time independent of where they differ.

    ``hmac.compare_digest`` raises on text with non-ASCII characters, and a header value
    arrives as latin-1 text holding whatever bytes the client sent: compare bytes.
    """
    return hmac.compare_digest(_bytes(given), _bytes(expected))


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The signature header value for ``body`` at ``timestamp`` (unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(
    secret: str,
    header: str | None,
    body: bytes,
    now: float | None = None,
    name: str = "signature",
    tolerance: float = TOLERANCE_SECONDS,
) -> None:
    """Raise ``SignatureError`` unless ``header`` signs ``body`` within ``tolerance``;
    ``name`` is the header's name, for the message."""
    if not secret:
        raise SignatureError("webhook secret is not configured")
    if not header:
        raise SignatureError(f"missing {name} header")
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
        given = parts["v1"]
    except (KeyError, ValueError):
        raise SignatureError(f"malformed {name} header") from None
    if abs((now if now is not None else time.time()) - timestamp) > tolerance:
        raise SignatureError(f"signature timestamp outside the {tolerance:g} s tolerance")
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    if not equal(given, expected):
        raise SignatureError("signature does not match")
