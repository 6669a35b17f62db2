"""The Webbing-like carrier's wire shapes: units, date formats, records and paging.

- Data in MB, 1 MB = 1,000,000 bytes, as a decimal with up to 6 places (exact bytes).
- Dates ``MM/dd/yyyy`` (``OrderDate``, ``ActivationDate``...). Where a time is needed,
  a ``...Utc`` field beside it holds ``MM/dd/yyyy HH:mm:ss.fff`` in UTC (invented: the
  public material shows dates only, and compressed-time products need milliseconds).
- Instance StatusID: 2 Inactive (ordered or queued), 3 Active, 5 Deactivated (expired,
  deactivated or cancelled). 4 Suspended is part of the vocabulary; the simulator never
  suspends.
- Invented product fields: ``DailyHighSpeedMB``, ``ThrottleKbps``, ``ValidityHours``
  (decimal, 6 places), ``ResetRule`` (``Rolling``, ``UtcMidnight``, ``LocalMidnight``),
  ``ResetUtcOffsetMinutes``, ``Price`` in dollars with ``Currency``.
- Paging: ``PaginationRequest{PageSize, PageNumber}`` (defaults 50 and 1, PageSize at most
  500, pages count from 1) → ``TotalRecords``, ``TotalPages``; a page past the end is empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from simulators.records import Package, Product
from simulators.webbing_soap import Many, Params
from simulators.webbing_usage import Reading

STATUS_IDS = {"NOT_ACTIVE": 2, "ACTIVE": 3, "TERMINATED": 5}
STATUS_NAMES = {2: "Inactive", 3: "Active", 4: "Suspended", 5: "Deactivated"}
RESET_NAMES = {
    "rolling": "Rolling",
    "utc_midnight": "UtcMidnight",
    "local_midnight": "LocalMidnight",
}
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
BYTES_PER_MB = 1_000_000

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DATE = "%m/%d/%Y"
_TIMES = ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S")


def date_text(t: float | None) -> str | None:
    return None if t is None else _moment(t).strftime(_DATE)


def time_text(t: float | None) -> str | None:
    """``MM/dd/yyyy HH:mm:ss.fff`` UTC, rounded to the millisecond."""
    if t is None:
        return None
    moment = _moment(t)
    return moment.strftime("%m/%d/%Y %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def parse_time(text: str) -> float:
    """Epoch seconds of a ``...Utc`` field; raises ValueError."""
    for pattern in _TIMES:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    raise ValueError(f"{text!r} is not MM/dd/yyyy HH:mm:ss[.fff]")


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
        "ThrottleKbps": p.throttle_kbps,
        "ValidityHours": f"{p.validity_seconds / 3600:.6f}".rstrip("0").rstrip("."),
        "ResetRule": RESET_NAMES[p.reset],
        "ResetUtcOffsetMinutes": p.reset_utc_offset_minutes,
        "Price": f"{p.price_cents // 100}.{p.price_cents % 100:02d}",
        "Currency": "USD",
    }


def instance_record(p: Package, product: Product | None, usage: Reading) -> dict[str, Any]:
    """A product instance on a device (``ServiceDeviceProduct``)."""
    status = STATUS_IDS[p.status]
    return {
        "ServiceDeviceProductID": p.id,
        "ICCID": p.iccid,
        "ProductID": p.product_id,
        "ProductName": product.name if product is not None else p.product_id,
        "Reference": p.reference,
        "StatusID": status,
        "Status": STATUS_NAMES[status],
        "DailyHighSpeedMB": megabytes(p.allowance_bytes),
        "ThrottleKbps": product.throttle_kbps if product is not None else None,
        "OrderDate": date_text(p.ordered_at),
        "OrderedAtUtc": time_text(p.ordered_at),
        "StartAtUtc": time_text(p.start_at),
        "ActivationDate": date_text(p.activated_at),
        "ActivatedAtUtc": time_text(p.activated_at),
        "ExpirationDate": date_text(p.expires_at),
        "ExpiresAtUtc": time_text(p.expires_at),
        "DeactivationDate": date_text(p.terminated_at),
        "DeactivatedAtUtc": time_text(p.terminated_at),
        **usage_fields(usage),
    }


def usage_fields(usage: Reading) -> dict[str, Any]:
    return {
        "TotalHSUsage": megabytes(usage.high_speed_bytes),
        "TotalWBUsage": megabytes(usage.throttled_bytes),
        "UsageAsOfUtc": time_text(usage.at),
    }


def paged(name: str, item: str, rows: Sequence[dict[str, Any]], pagination: Any) -> dict[str, Any]:
    """One page of ``rows`` as ``{name: Many(item, ...), TotalRecords, TotalPages}``.

    Raises ValueError for a PaginationRequest that is not two positive integers in range.
    """
    size, number = _paging(pagination if isinstance(pagination, dict) else {})
    start = (number - 1) * size
    return {
        name: Many(item, rows[start : start + size]),
        "TotalRecords": len(rows),
        "TotalPages": -(-len(rows) // size),
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
