"""The Webbing-like carrier's SOAP methods (the WWS calls on the public record) over the engine.

Each method takes its fields inside ``<{Method}Request>`` (``?`` optional):

- ``GetProductsList {PaginationRequest?}`` → ``Products/ProductRecord[]``
- ``GetServiceDevices {DeviceIdentifier{ICCID}?, OnlyActivePlansDevices?, BranchID?,
  AccountID?, AssignmentID?, PaginationRequest?}`` → ``ServiceDevices/ServiceDeviceRecord[]``
  in inventory order. Without a DeviceIdentifier, every device (the simulator has one
  account: BranchID, AccountID and AssignmentID are accepted and not used); one naming
  no device of the inventory finds none. ``OnlyActivePlansDevices`` true: only devices
  with a product now.
- ``ChangeServiceDeviceProduct {ServiceDeviceIdentifier, ProductID}``: a purchase, taking
  effect after the activation latency (simulators.webbing).
- ``ActivateServiceDevice``, ``SuspendServiceDevice`` ``{ServiceDeviceIdentifier}``:
  StatusID 4 → 3 and 3 (or 2) → 4, idempotent; activating an Inactive (2) device leaves it
  Inactive.
- ``GetDeviceUsage {ServiceDeviceIdentifier, StartDate, EndDate, DeviceTimeInterval?,
  ProductID?, AssignmentID?, GroupBy*?, PaginationRequest?}`` → ``Usage/DeviceUsageRecord[]``
  of ``TotalUsage`` (MB, high-speed and throttled) and ``TotalUsageDays`` (UTC days with
  usage), over the UTC days StartDate to EndDate inclusive. ``DeviceTimeInterval``
  ``Unknown`` (or absent): one record for the range; ``ByDay``/``Day``: one per day with
  usage, ``ByMonth``: one per month with usage, each with its first day as ``Date``.
  ``ProductID`` other than 0: that product's passes only. Grouping is not done.

``ServiceDeviceIdentifier`` is one of ``ServiceDeviceID``, ``ICCID``, ``IMEI`` (devices here
have no IMEI). Unknown request fields are ignored, as ASMX's serializer ignores them.
Every answer starts with ``Success``, ``ResponseCode``, ``ResponseDescription``; failures
are HTTP 200 with ``Success=false``. ResponseCode 1000 (general error) is on the record,
and is what a request that cannot be read gets; the others are invented:

====  =======================================================================
0     Success
1000  general error: an unexpected failure, or an unreadable request (no or a
      misnamed ``{Method}Request``, a missing or malformed field, bad paging)
1001  authentication failed (missing or wrong Username/Password/WSKey)
1002  service device not found
1003  product not found
1005  invalid state (a product change for a suspended device)
====  =======================================================================
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from typing import Any

from simulators.core import CarrierEngine
from simulators.errors import SimulationError, UnknownProduct, UnknownSim, WrongState
from simulators.webbing_devices import Devices
from simulators.webbing_soap import Params, SoapCall
from simulators.webbing_usage import DAY, UsageMeter, usage_by_day
from simulators.webbing_views import (
    date_text,
    device_record,
    megabytes,
    paged,
    parse_date,
    product_record,
)

logger = logging.getLogger(__name__)

INTERVALS = {"": None, "Unknown": None, "ByDay": "day", "Day": "day", "ByMonth": "month"}


class ResponseCode(IntEnum):
    OK = 0
    GENERAL_ERROR = 1000
    AUTHENTICATION_FAILED = 1001
    DEVICE_NOT_FOUND = 1002
    PRODUCT_NOT_FOUND = 1003
    INVALID_STATE = 1005


_ENGINE_CODES: dict[type[SimulationError], ResponseCode] = {
    UnknownSim: ResponseCode.DEVICE_NOT_FOUND,
    UnknownProduct: ResponseCode.PRODUCT_NOT_FOUND,
    WrongState: ResponseCode.INVALID_STATE,
}


class Unreadable(Exception):
    """A field is missing or malformed: answered as a general error (1000)."""


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str
    wskey: str

    def accept(self, given: dict[str, str]) -> bool:
        """Constant-time comparison of all three fields (no early exit)."""
        expected = {"Username": self.username, "Password": self.password, "WSKey": self.wskey}
        ok = True
        for key, value in expected.items():
            ok &= hmac.compare_digest(given.get(key, "").encode(), value.encode())
        return ok


class WebbingService:
    """The SOAP methods over one engine; :meth:`handle` answers any parsed call."""

    def __init__(self, engine: CarrierEngine, meter: UsageMeter, credentials: Credentials) -> None:
        self.engine, self.meter, self.credentials = engine, meter, credentials
        self.devices = Devices(engine, meter)
        self.methods: dict[str, Callable[[Params], dict[str, Any]]] = {
            "GetProductsList": self.products_list,
            "GetServiceDevices": self.service_devices,
            "ChangeServiceDeviceProduct": self.change_product,
            "ActivateServiceDevice": self.activate,
            "SuspendServiceDevice": self.suspend,
            "GetDeviceUsage": self.device_usage,
        }

    def handle(self, call: SoapCall) -> dict[str, Any]:
        if call.problem is not None:
            return _status(ResponseCode.GENERAL_ERROR, f"General error: {call.problem}")
        if not self.credentials.accept(call.credentials):
            return _status(ResponseCode.AUTHENTICATION_FAILED, "Authentication failed")
        try:
            fields = self.methods[call.method](call.params)
        except Unreadable as exc:
            return _status(ResponseCode.GENERAL_ERROR, f"General error: {exc}")
        except SimulationError as exc:
            return _status(_ENGINE_CODES.get(type(exc), ResponseCode.GENERAL_ERROR), str(exc))
        except Exception:
            logger.exception("%s failed", call.method)
            return _status(ResponseCode.GENERAL_ERROR, "General error")
        return {**_status(ResponseCode.OK, "Success"), **fields}

    def products_list(self, params: Params) -> dict[str, Any]:
        rows = [product_record(p) for p in self.engine.products.values()]
        return _paged("Products", "ProductRecord", rows, params)

    def service_devices(self, params: Params) -> dict[str, Any]:
        wanted = _nested(params, "DeviceIdentifier")
        if not wanted:
            devices = self.devices.all()
        elif wanted.get("ICCID") and self.engine.has_esim(wanted["ICCID"]):
            devices = [self.devices.read(wanted["ICCID"])]
        else:
            devices = []
        if _flag(params, "OnlyActivePlansDevices"):
            devices = [d for d in devices if d.product is not None]
        rows = [device_record(d) for d in devices]
        return _paged("ServiceDevices", "ServiceDeviceRecord", rows, params)

    def change_product(self, params: Params) -> dict[str, Any]:
        iccid = self._device(params)
        package = self.engine.order(iccid, _required(params, "ProductID"), None, in_place=True)
        self.meter.track(package)
        self.engine.activate(package.id)
        return {}

    def activate(self, params: Params) -> dict[str, Any]:
        self.engine.resume(self._device(params))
        return {}

    def suspend(self, params: Params) -> dict[str, Any]:
        self.engine.suspend(self._device(params))
        return {}

    def device_usage(self, params: Params) -> dict[str, Any]:
        iccid = self._device(params)
        since = _date(params, "StartDate")
        until = _date(params, "EndDate") + DAY
        if until <= since:
            raise Unreadable("EndDate is before StartDate")
        interval = _optional(params, "DeviceTimeInterval") or ""
        if interval not in INTERVALS:
            raise Unreadable(f"DeviceTimeInterval {interval!r} is not one of {list(INTERVALS)}")
        product_id = _optional(params, "ProductID") or "0"
        packages = [
            p
            for p in self.engine.packages(iccid)
            if product_id == "0" or p.product_id == product_id
        ]
        days = usage_by_day(packages, self.meter, since, until)
        buckets: dict[float, list[float]] = {}
        if INTERVALS[interval] is None:
            buckets[since] = list(days.values())
        for day, used in sorted(days.items()):
            if INTERVALS[interval] is not None:
                buckets.setdefault(_bucket(day, INTERVALS[interval], since), []).append(used)
        rows = [
            {
                "Date": date_text(start) if INTERVALS[interval] is not None else None,
                "TotalUsage": megabytes(sum(used)),
                "TotalUsageDays": sum(1 for u in used if int(u) > 0),
            }
            for start, used in buckets.items()
        ]
        return _paged("Usage", "DeviceUsageRecord", rows, params)

    def _device(self, params: Params) -> str:
        try:
            return self.devices.iccid_of(_nested(params, "ServiceDeviceIdentifier"))
        except ValueError as exc:
            raise Unreadable(str(exc)) from exc


def _bucket(day: float, unit: str | None, since: float) -> float:
    """The first day of the record a day's usage goes to (a month's, but not before the
    range starts)."""
    if unit != "month":
        return day
    moment = datetime.fromtimestamp(day, UTC)
    return max(since, moment.replace(day=1).timestamp())


def _status(code: ResponseCode, description: str) -> dict[str, Any]:
    return {
        "Success": code == ResponseCode.OK,
        "ResponseCode": int(code),
        "ResponseDescription": description,
    }


def _paged(name: str, item: str, rows: list[dict[str, Any]], params: Params) -> dict[str, Any]:
    try:
        return paged(name, item, rows, _nested(params, "PaginationRequest"))
    except ValueError as exc:
        raise Unreadable(str(exc)) from exc


def _nested(params: Params, name: str) -> dict[str, str]:
    value = params.get(name)
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise Unreadable(f"{name} must be a structure, not a value")
    return {k: v for k, v in value.items() if isinstance(v, str)}


def _optional(params: Params, name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise Unreadable(f"{name} must be a value, not a structure")
    return value or None


def _required(params: Params, name: str) -> str:
    value = _optional(params, name)
    if value is None:
        raise Unreadable(f"{name} is required")
    return value


def _flag(params: Params, name: str) -> bool:
    value = (_optional(params, name) or "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise Unreadable(f"{name} must be true or false")
    return value in ("true", "1")


def _date(params: Params, name: str) -> float:
    text = _required(params, name)
    try:
        return parse_date(text)
    except ValueError as exc:
        raise Unreadable(f"{name} {text!r} is not MM/dd/yyyy") from exc
