"""Webbing's wire records read as the normalised carrier shapes (carriers.base).

Data in MB (1 MB = 10^6 bytes, decimal), times ``MM/dd/yyyy HH:mm:ss.fff`` UTC (a bare
``MM/dd/yyyy`` date counts as 00:00 UTC). Every function raises KeyError, ValueError or
ArithmeticError on a record it cannot read.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from carriers.base import CarrierLine, CarrierProduct, LineStatus, LineUsage, ResetRule

# 4 Suspended: not serving, but it can be activated again.
STATUS: dict[str, LineStatus] = {"2": "scheduled", "3": "active", "4": "scheduled", "5": "ended"}
RESETS: dict[str, ResetRule] = {
    "Rolling": "rolling",
    "UtcMidnight": "utc_midnight",
    "LocalMidnight": "local_midnight",
}
_TIMES = ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y")


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    for pattern in _TIMES:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"unreadable time {text!r}")


def _required_time(text: str | None) -> datetime:
    moment = _time(text)
    if moment is None:
        raise ValueError("a required time is missing")
    return moment


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative number")
    return value


def _bytes(megabytes: str) -> int:
    return round(_decimal(megabytes) * 1_000_000)


def usage(u: dict[str, str]) -> LineUsage:
    return LineUsage(
        line_id=u["ServiceDeviceProductID"],
        used_bytes=_bytes(u["TotalHSUsage"]),
        allowance_bytes=_bytes(u["DailyHighSpeedMB"]),
        observed_at=_required_time(u["UsageAsOfUtc"]),
        iccid=u.get("ICCID") or None,
    )


def line(i: dict[str, str]) -> CarrierLine:
    return CarrierLine(
        line_id=i["ServiceDeviceProductID"],
        iccid=i["ICCID"],
        carrier_product_id=i["ProductID"],
        reference=i.get("Reference") or None,
        status=STATUS[i["StatusID"]],
        ordered_at=_required_time(i.get("OrderedAtUtc") or i["OrderDate"]),
        activated_at=_time(i.get("ActivatedAtUtc") or i.get("ActivationDate")),
        ends_at=_time(i.get("ExpiresAtUtc") or i.get("ExpirationDate")),
        ended_at=_time(i.get("DeactivatedAtUtc") or i.get("DeactivationDate")),
        allowance_bytes=_bytes(i["DailyHighSpeedMB"]),
        used_bytes=_bytes(i.get("TotalHSUsage") or "0"),
    )


def product(p: dict[str, str]) -> CarrierProduct:
    return CarrierProduct(
        carrier_product_id=p["ProductID"],
        name=p.get("ProductName") or p["ProductID"],
        allowance_bytes=_bytes(p["DailyHighSpeedMB"]),
        validity_seconds=round(_decimal(p["ValidityHours"]) * 3600),
        reset=RESETS[p.get("ResetRule") or "Rolling"],
        reset_utc_offset_minutes=int(p.get("ResetUtcOffsetMinutes") or 0),
        throttle_kbps=int(p.get("ThrottleKbps") or 0),
        price_cents=round(_decimal(p.get("Price") or "0") * 100),
    )
