"""Webbing's wire records read as the normalised carrier shapes (carriers.base).

Data in MB (1 MB = 10^6 bytes, decimal), times ``MM/dd/yyyy HH:mm:ss.fff`` UTC (a bare
``MM/dd/yyyy`` date counts as 00:00 UTC). Every function raises KeyError, ValueError or
ArithmeticError on a record it cannot read.

Webbing has one product per service device, replaced in place, and no id per pass: a
line is the device's product from one change on, named ``{ICCID}:{ProductID}:{moment}``
(:class:`LineName`): ``e{ms}``, the moment it took effect (``UpdatedAtUtc``, the line as
the carrier shows it), or, for a line just bought and not yet in effect, ``r{ms}-{ms}``:
when we asked for the change, and since when the product then on the device had been in
effect (the change shows as a product in effect since later than that).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Literal

from carriers.base import CarrierLine, CarrierProduct, LineStatus, ResetRule
from carriers.windows import window_end

ACTIVE, SUSPENDED = "3", "4"
# A device's StatusID: 2 Inactive (never had a product), 3 Active, 4 Suspended,
# 5 Deactivated.
STATUS_IDS = ("2", "3", "4", "5")
RESETS: dict[str, ResetRule] = {
    "Rolling": "rolling",
    "UtcMidnight": "utc_midnight",
    "LocalMidnight": "local_midnight",
}
# A carrier's clock may run this far from ours, and a time be truncated: a change we asked
# for at one moment shows as taking effect no earlier than this before it.
CLOCK_SKEW = timedelta(seconds=2)
_TIMES = ("%m/%d/%Y %H:%M:%S.%f", "%m/%d/%Y %H:%M:%S", "%m/%d/%Y")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def time(text: str | None) -> datetime | None:
    if not text:
        return None
    for pattern in _TIMES:
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ValueError(f"unreadable time {text!r}")


def wire_time(moment: datetime) -> str:
    """``MM/dd/yyyy HH:mm:ss.fff`` in UTC."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%m/%d/%Y %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def _decimal(text: str) -> Decimal:
    value = Decimal(text)
    if not value.is_finite() or value < 0:
        raise ValueError(f"{text!r} is not a non-negative number")
    return value


def megabytes(text: str) -> int:
    """Bytes of a figure in MB."""
    return round(_decimal(text) * 1_000_000)


def product(p: dict[str, str], currency: str) -> CarrierProduct:
    """A ``ProductRecord`` of ``GetProductsList``; its ``Price`` in ``currency``."""
    return CarrierProduct(
        carrier_product_id=p["ProductID"],
        name=p.get("ProductName") or p["ProductID"],
        allowance_bytes=megabytes(p["DailyHighSpeedMB"]),
        validity_seconds=round(_decimal(p["ValidityHours"]) * 3600),
        reset=RESETS[p.get("ResetRule") or "Rolling"],
        reset_utc_offset_minutes=int(p.get("ResetUtcOffsetMinutes") or 0),
        throttle_kbps=int(p.get("ThrottleKbps") or 0),
        price_cents=round(_decimal(p.get("Price") or "0") * 100),
        currency=currency,
        rotation="in_place",
    )


@dataclass(frozen=True)
class Device:
    """A ``ServiceDeviceRecord`` of ``GetServiceDevices``: the device and the product on it
    (``product_id`` ``"0"``: none), ``since`` it took effect, and the MB used on it."""

    iccid: str
    status_id: str
    product_id: str
    since: datetime | None
    used_bytes: int
    status_changed_at: datetime | None

    @classmethod
    def of(cls, r: dict[str, str]) -> Device:
        if r["StatusID"] not in STATUS_IDS:
            raise ValueError(f"unknown StatusID {r['StatusID']!r}")
        return cls(
            iccid=r["ICCID"],
            status_id=r["StatusID"],
            product_id=r.get("ProductID") or "0",
            since=time(r.get("UpdatedAtUtc")),
            used_bytes=megabytes(r.get("DataUsage") or "0"),
            status_changed_at=time(r.get("StatusDateChange")),
        )


@dataclass(frozen=True)
class LineName:
    """A line's id: the device, its product, and a moment (see the module docstring)."""

    iccid: str
    product_id: str
    kind: Literal["r", "e"]
    at: datetime
    after: datetime | None = None  # a request's: since when the device's product was in effect

    def __str__(self) -> str:
        moment = f"{self.kind}{_ms(self.at)}"
        if self.kind == "r":
            moment += f"-{_ms(self.after) if self.after else 0}"
        return f"{self.iccid}:{self.product_id}:{moment}"

    @classmethod
    def parse(cls, line_id: str) -> LineName:
        iccid, product_id, moment = line_id.split(":")
        kind, at, _, after = moment[:1], *moment[1:].partition("-")
        if kind not in ("r", "e") or not at.isdigit() or not (after.isdigit() or after == ""):
            raise ValueError(f"not a Webbing line id: {line_id!r}")
        if (kind == "r") != (after != ""):
            raise ValueError(f"not a Webbing line id: {line_id!r}")
        since = _EPOCH + timedelta(milliseconds=int(after)) if after and int(after) else None
        return cls(iccid, product_id, "r" if kind == "r" else "e", _from_ms(at), since)

    def shown_by(self, device: Device) -> bool:
        """Whether the device's product now is this line: the same product, in effect
        since this line's moment; for a request, since after the product it replaces."""
        if device.product_id != self.product_id or device.since is None:
            return False
        if self.kind == "e":
            return abs(device.since - self.at) < timedelta(milliseconds=1)
        newer = self.after is None or device.since > self.after
        return newer and device.since >= self.at - CLOCK_SKEW


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def _from_ms(text: str) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(text))


def _replaced(name: LineName, device: Device) -> bool:
    """Whether another product took effect on the device after ``name`` was asked for."""
    if device.product_id == "0" or device.since is None:
        return False
    return (
        name.after is None or device.since > name.after
    ) and device.since >= name.at - CLOCK_SKEW


def line(name: LineName, device: Device, offer: CarrierProduct, now: datetime) -> CarrierLine:
    """The line ``name`` as ``device`` shows it now: active while its product is on the
    device in effect and its window runs; scheduled while a change we asked for is not
    yet in effect (nothing on the record shows a pending change); ended otherwise (the
    window ran out, the device was suspended, or a later change replaced it)."""
    status: LineStatus
    activated_at = ends_at = ended_at = None
    used = 0
    line_id = str(name)
    if name.kind == "e":  # in effect since its moment, whatever the device shows now
        activated_at = name.at
        ends_at = window_end(
            name.at, offer.validity_seconds, offer.reset, offer.reset_utc_offset_minutes
        )
    if name.shown_by(device):
        assert device.since is not None
        activated_at = device.since
        line_id = str(LineName(name.iccid, name.product_id, "e", device.since))
        ends_at = window_end(
            device.since, offer.validity_seconds, offer.reset, offer.reset_utc_offset_minutes
        )
        used = min(device.used_bytes, offer.allowance_bytes)
        if device.status_id != ACTIVE:
            status, ended_at = "ended", device.status_changed_at or now
        elif now >= ends_at:
            status, ended_at = "ended", ends_at
        else:
            status = "active"
    elif name.kind == "r" and not _replaced(name, device):
        status = "scheduled"  # asked for, not yet in effect (nothing shows it pending)
    else:
        status, ended_at = "ended", device.since or now
    return CarrierLine(
        line_id=line_id,
        iccid=name.iccid,
        carrier_product_id=name.product_id,
        reference=None,  # the API has no place for it
        status=status,
        ordered_at=name.at if name.kind == "r" else activated_at or name.at,
        activated_at=activated_at,
        ends_at=ends_at,
        ended_at=ended_at,
        allowance_bytes=offer.allowance_bytes,
        used_bytes=used,
    )
