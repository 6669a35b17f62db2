"""The Webbing-like carrier's wire shapes: units, date formats, records and paging.

- Data in MB, 1 MB = 1,000,000 bytes, as a decimal with up to 6 places (exact bytes).
- Times ``MM/dd/yyyy HH:mm:ss.fff`` UTC; usage dates ``MM/dd/yyyy`` (UTC days).
- ``ProductRecord``: ``ProductID, ProductName, DailyHighSpeedMB, ValidityHours`` (decimal,
  6 places), ``ResetRule`` (``Rolling``, ``UtcMidnight``, ``LocalMidnight``),
  ``ResetUtcOffsetMinutes, ThrottleKbps, Price`` (dollars).
- ``ServiceDeviceRecord``: ``ServiceDeviceID, ICCID, StatusID, StatusName, ProductID,
  ProductName, DataUsage, UpdatedAtUtc, StatusDateChange`` (simulators.webbing_devices).
- Paging: ``PaginationRequest{PageSize, PageNumber}`` (defaults 50 and 1, PageSize at most
  1000, pages count from 1) → ``PaginationResponse{TotalRecords, TotalPages}`` beside the
  rows; a page past the end is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from simulators.records import Product
from simulators.webbing_devices import Device
from simulators.webbing_soap import Many, Params

STATUS_NAMES = {2: "Inactive", 3: "Active", 4: "Suspended", 5: "Deactivated"}
RESET_NAMES = {
    "rolling": "Rolling",
    "utc_midnight": "UtcMidnight",
    "local_midnight": "LocalMidnight",
}
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
BYTES_PER_MB = 1_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = "%m/%d/%Y"


def date_text(t: float) -> str:
    return _moment(t).strftime(_DATE)


def time_text(t: float | None) -> str | None:
    """``MM/dd/yyyy HH:mm:ss.fff`` UTC, rounded to the millisecond."""
    if t is None:
        return None
    moment = _moment(t)
    return moment.strftime("%m/%d/%Y %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def parse_date(text: str) -> float:
    """Epoch seconds of 00:00 UTC of a ``MM/dd/yyyy`` date; raises ValueError."""
    return datetime.strptime(text, _DATE).replace(tzinfo=UTC).timestamp()


def megabytes(n: float) -> str:
    whole, fraction = divmod(int(n), BYTES_PER_MB)
    return f"{whole}.{fraction:06d}".rstrip("0").rstrip(".")


def product_record(p: Product) -> dict[str, Any]:
    return {
        "ProductID": p.id,
        "ProductName": p.name,
        "DailyHighSpeedMB": megabytes(p.allowance_bytes),
        "ValidityHours": f"{p.validity_seconds / 3600:.6f}".rstrip("0").rstrip("."),
        "ResetRule": RESET_NAMES[p.reset],
        "ResetUtcOffsetMinutes": p.reset_utc_offset_minutes,
        "ThrottleKbps": p.throttle_kbps,
        "Price": f"{p.price_cents // 100}.{p.price_cents % 100:02d}",
    }


def device_record(d: Device) -> dict[str, Any]:
    return {
        "ServiceDeviceID": d.service_device_id,
        "ICCID": d.iccid,
        "StatusID": d.status_id,
        "StatusName": STATUS_NAMES[d.status_id],
        "ProductID": d.product_id,
        "ProductName": d.product_name,
        "DataUsage": megabytes(d.used_bytes),
        "UpdatedAtUtc": time_text(d.updated_at),
        "StatusDateChange": time_text(d.status_changed_at),
    }


def paged(name: str, item: str, rows: Sequence[dict[str, Any]], pagination: Any) -> dict[str, Any]:
    """One page of ``rows`` as ``{name: Many(item, ...), PaginationResponse}``.

    Raises ValueError for a PaginationRequest that is not two positive integers in range.
    """
    size, number = _paging(pagination if isinstance(pagination, dict) else {})
    start = (number - 1) * size
    return {
        name: Many(item, rows[start : start + size]),
        "PaginationResponse": {"TotalRecords": len(rows), "TotalPages": -(-len(rows) // size)},
    }


def _paging(pagination: Params) -> tuple[int, int]:
    size = _positive(pagination.get("PageSize"), "PageSize", DEFAULT_PAGE_SIZE)
    number = _positive(pagination.get("PageNumber"), "PageNumber", 1)
    if size > MAX_PAGE_SIZE:
        raise ValueError(f"PageSize must be at most {MAX_PAGE_SIZE}")
    return size, number


def _positive(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    if not isinstance(value, str) or not (value.isascii() and value.isdigit()) or int(value) < 1:
        raise ValueError(f"{name} must be a positive integer")
    return int(value)


def _moment(t: float) -> datetime:
    return _EPOCH + timedelta(milliseconds=round(t * 1000))
