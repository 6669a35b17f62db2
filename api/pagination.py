"""Opaque cursors for keyset pagination over (created_at, id), newest first.

A cursor is the URL-safe base64 of the last row's ``[created_at, id]``; it stays valid
however many rows are added meanwhile (new rows sort before it).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from api.errors import ApiError


def encode(created_at: datetime, row_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), row_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the row the cursor points after; 422 if it is not ours."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, row_id = json.loads(raw)
        created_at = datetime.fromisoformat(at)
        if created_at.tzinfo is None or not isinstance(row_id, str):
            raise ValueError(cursor)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ApiError(422, "invalid_cursor", "cursor is not one this API returned") from None
    return created_at, row_id
