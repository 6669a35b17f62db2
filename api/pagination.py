"""Opaque cursors for keyset pagination, newest first: balances over (created_at, id), a
balance's lines over their seq; and spend groups in their order, over (key, currency).

A cursor is the URL-safe base64 of the last row's key as JSON; it stays valid however
many rows are added meanwhile (new rows sort before it).
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime
from typing import Any

from api.errors import ApiError

# A seq is a 32-bit integer column; a larger number in a cursor is none we returned.
SEQ_LIMIT = 2**31


def encode(created_at: datetime, row_id: str) -> str:
    return _pack([created_at.isoformat(), row_id])


def decode(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the row the cursor points after; 422 if it is not ours."""
    try:
        at, row_id = _unpack(cursor)
        created_at = datetime.fromisoformat(at)
        if created_at.tzinfo is None or not isinstance(row_id, str):
            raise ValueError(cursor)
    except (ValueError, TypeError):
        raise _not_ours() from None
    return created_at, row_id


def encode_seq(seq: int) -> str:
    return _pack(["seq", seq])


def decode_seq(cursor: str) -> int:
    """The seq of the line the cursor points after; 422 if it is not ours."""
    try:
        tag, seq = _unpack(cursor)
        if tag != "seq" or type(seq) is not int or not 0 <= seq < SEQ_LIMIT:
            raise ValueError(cursor)
    except (ValueError, TypeError):
        raise _not_ours() from None
    return seq


def _pack(key: list[Any]) -> str:
    raw = json.dumps(key, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unpack(cursor: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError) as error:
        raise ValueError(cursor) from error


def _not_ours() -> ApiError:
    return ApiError(422, "invalid_cursor", "cursor is not one this API returned")


def encode_group(group_by: str, key: str | None, currency: str | None) -> str:
    return _pack(["group", group_by, key, currency])


def decode_group(cursor: str, group_by: str) -> tuple[str | None, str | None]:
    """(key, currency) of the spend group the cursor points after, for the same
    ``group_by``; 422 if it is not ours."""
    try:
        tag, by, key, currency = _unpack(cursor)
        if tag != "group" or by != group_by:
            raise ValueError(cursor)
        if not all(v is None or isinstance(v, str) for v in (key, currency)):
            raise ValueError(cursor)
    except (ValueError, TypeError):
        raise _not_ours() from None
    return key, currency
