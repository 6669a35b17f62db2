"""The Webbing-like carrier's SOAP methods (WWS partner API shapes) over the engine.

Methods (parameters as child elements of the call; ``?`` optional):

- ``GetProductsList {PaginationRequest?}``
- ``AddServiceDeviceProduct {ICCID, ProductID, Reference?, StartAtUtc?}``
- ``ActivateServiceDeviceProduct``, ``DeactivateServiceDeviceProduct``,
  ``GetServiceDeviceProduct`` ``{ServiceDeviceProductID, ICCID?}`` (each answers the
  ``ServiceDeviceProduct``); deactivating is idempotent and cancels an inactive instance
- ``GetServiceDeviceProducts {ICCID, PaginationRequest?}`` (oldest first)
- ``GetOnlineDeviceUsage {ServiceDeviceProductID? | ICCID?}`` (spot usage of one
  instance, or of the device's newest active one)
- ``GetDeviceUsage {ICCID?, FromDate?, ToDate?, PaginationRequest?}`` (per instance active
  within those UTC dates; without an ICCID, every instance of the account, grouped by
  device in the order devices were added: the paged bulk read a usage poller uses)
- ``GetServiceDevice {ICCID}`` (StatusID 3 while an instance is active, else 2)

Invented (CARRIERS.md): the instance methods and their names, ``Reference`` (stored,
never used to refuse a second order), ``StartAtUtc`` (the instance turns active exactly
then, without latency; an Activate call meanwhile keeps that time; a time not in the
future is an ordinary activation request), and the ResponseCodes but 1000. Every answer
carries ``Success``, ``ResponseCode``, ``ResponseDescription``; business errors are HTTP
200 with ``Success=false``:

====  =======================================================================
0     Success
1000  general error (an unexpected failure; integrators retry)
1001  authentication failed (missing or wrong Username/Password/WSKey)
1002  device not found (ICCID not in the inventory)
1003  product not found
1004  service device product not found (or not on the ICCID given)
1005  invalid state (e.g. activating a deactivated instance)
1006  invalid request (a missing or malformed field)
====  =======================================================================
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from simulators.core import CarrierEngine
from simulators.errors import (
    SimulationError,
    UnknownPackage,
    UnknownProduct,
    UnknownSim,
    WrongState,
)
from simulators.records import Package
from simulators.webbing_soap import Params, SoapCall
from simulators.webbing_usage import UsageMeter
from simulators.webbing_views import (
    STATUS_IDS,
    instance_record,
    megabytes,
    paged,
    parse_date,
    parse_time,
    product_record,
    usage_fields,
)

logger = logging.getLogger(__name__)

MAX_REFERENCE = 255


class ResponseCode(IntEnum):
    OK = 0
    GENERAL_ERROR = 1000
    AUTHENTICATION_FAILED = 1001
    DEVICE_NOT_FOUND = 1002
    PRODUCT_NOT_FOUND = 1003
    DEVICE_PRODUCT_NOT_FOUND = 1004
    INVALID_STATE = 1005
    INVALID_REQUEST = 1006


_ENGINE_CODES: dict[type[SimulationError], ResponseCode] = {
    UnknownSim: ResponseCode.DEVICE_NOT_FOUND,
    UnknownProduct: ResponseCode.PRODUCT_NOT_FOUND,
    UnknownPackage: ResponseCode.DEVICE_PRODUCT_NOT_FOUND,
    WrongState: ResponseCode.INVALID_STATE,
}


class WebbingError(Exception):
    def __init__(self, code: ResponseCode, description: str) -> None:
        super().__init__(description)
        self.code, self.description = code, description


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
        self.methods: dict[str, Callable[[Params], dict[str, Any]]] = {
            "GetProductsList": self.products_list,
            "AddServiceDeviceProduct": self.add_product,
            "ActivateServiceDeviceProduct": self.activate,
            "DeactivateServiceDeviceProduct": self.deactivate,
            "GetServiceDeviceProduct": self.device_product,
            "GetServiceDeviceProducts": self.device_products,
            "GetOnlineDeviceUsage": self.online_usage,
            "GetDeviceUsage": self.device_usage,
            "GetServiceDevice": self.device,
        }

    def handle(self, call: SoapCall) -> dict[str, Any]:
        if not self.credentials.accept(call.credentials):
            return _status(ResponseCode.AUTHENTICATION_FAILED, "Authentication failed")
        try:
            fields = self.methods[call.method](call.params)
        except WebbingError as exc:
            return _status(exc.code, exc.description)
        except SimulationError as exc:
            return _status(_ENGINE_CODES.get(type(exc), ResponseCode.GENERAL_ERROR), str(exc))
        except Exception:
            logger.exception("%s failed", call.method)
            return _status(ResponseCode.GENERAL_ERROR, "General error")
        return {**_status(ResponseCode.OK, "Success"), **fields}

    def products_list(self, params: Params) -> dict[str, Any]:
        rows = [product_record(p) for p in self.engine.products.values()]
        return _paged("Products", "Product", rows, params)

    def add_product(self, params: Params) -> dict[str, Any]:
        iccid, product_id = _required(params, "ICCID"), _required(params, "ProductID")
        reference = _optional(params, "Reference")
        if reference is not None and len(reference) > MAX_REFERENCE:
            raise _invalid(f"Reference is longer than {MAX_REFERENCE} characters")
        start_text = _optional(params, "StartAtUtc")
        start_at = _parsed(parse_time, start_text, "StartAtUtc") if start_text else None
        package = self.engine.order(iccid, product_id, reference)
        self.meter.track(package)
        if start_at is not None:
            package = self.engine.activate(package.id, at=start_at)
        return {"ServiceDeviceProduct": self._instance(package)}

    def activate(self, params: Params) -> dict[str, Any]:
        package = self.engine.activate(self._package(params).id)
        return {"ServiceDeviceProduct": self._instance(package)}

    def deactivate(self, params: Params) -> dict[str, Any]:
        package = self.engine.terminate(self._package(params).id)
        return {"ServiceDeviceProduct": self._instance(package)}

    def device_product(self, params: Params) -> dict[str, Any]:
        return {"ServiceDeviceProduct": self._instance(self._package(params))}

    def device_products(self, params: Params) -> dict[str, Any]:
        packages = self.engine.listed(_required(params, "ICCID"))
        rows = [self._instance(p) for p in packages]
        return _paged("ServiceDeviceProducts", "ServiceDeviceProduct", rows, params)

    def online_usage(self, params: Params) -> dict[str, Any]:
        if _optional(params, "ServiceDeviceProductID") is not None:
            return self._usage(self._package(params))
        iccid = _required(params, "ICCID")
        active = [p for p in self.engine.packages(iccid) if p.status == "ACTIVE"]
        newest = max(active, key=lambda p: p.activated_at or 0.0, default=None)
        if newest is None:
            return {"ICCID": iccid, "StatusID": STATUS_IDS["NOT_ACTIVE"]}
        return self._usage(newest)

    def device_usage(self, params: Params) -> dict[str, Any]:
        iccid = _optional(params, "ICCID")
        from_text, to_text = _optional(params, "FromDate"), _optional(params, "ToDate")
        since = _parsed(parse_date, from_text, "FromDate") if from_text else float("-inf")
        until = _parsed(parse_date, to_text, "ToDate") + 86_400 if to_text else float("inf")
        rows = [
            self._usage(p)
            for p in self.engine.packages(iccid)
            if p.activated_at is not None
            and p.activated_at < until
            and (p.terminated_at is None or p.terminated_at >= since)
        ]
        return _paged("DeviceUsages", "DeviceUsage", rows, params)

    def device(self, params: Params) -> dict[str, Any]:
        iccid = _required(params, "ICCID")
        active = [p.id for p in self.engine.packages(iccid) if p.status == "ACTIVE"]
        status = STATUS_IDS["ACTIVE" if active else "NOT_ACTIVE"]
        return {"ServiceDevice": {"ICCID": iccid, "StatusID": status}}

    def _package(self, params: Params) -> Package:
        package = self.engine.package(_required(params, "ServiceDeviceProductID"))
        iccid = _optional(params, "ICCID")
        if iccid is not None and iccid != package.iccid:
            raise WebbingError(
                ResponseCode.DEVICE_PRODUCT_NOT_FOUND,
                f"service device product {package.id} is not on device {iccid}",
            )
        return package

    def _instance(self, package: Package) -> dict[str, Any]:
        product = self.engine.products.get(package.product_id)
        return instance_record(package, product, self.meter.reading(package))

    def _usage(self, package: Package) -> dict[str, Any]:
        return {
            "ServiceDeviceProductID": package.id,
            "ICCID": package.iccid,
            "ProductID": package.product_id,
            "Reference": package.reference,
            "StatusID": STATUS_IDS[package.status],
            "DailyHighSpeedMB": megabytes(package.allowance_bytes),
            **usage_fields(self.meter.reading(package)),
        }


def _status(code: ResponseCode, description: str) -> dict[str, Any]:
    return {
        "Success": code == ResponseCode.OK,
        "ResponseCode": int(code),
        "ResponseDescription": description,
    }


def _paged(name: str, item: str, rows: list[dict[str, Any]], params: Params) -> dict[str, Any]:
    try:
        return paged(name, item, rows, params.get("PaginationRequest"))
    except ValueError as exc:
        raise _invalid(str(exc)) from exc


def _optional(params: Params, name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise _invalid(f"{name} must be a value, not a structure")
    return value or None


def _required(params: Params, name: str) -> str:
    value = _optional(params, name)
    if value is None:
        raise _invalid(f"{name} is required")
    return value


def _parsed(parse: Callable[[str], float], text: str, name: str) -> float:
    try:
        return parse(text)
    except ValueError as exc:
        raise _invalid(f"{name}: {exc}") from exc


def _invalid(message: str) -> WebbingError:
    return WebbingError(ResponseCode.INVALID_REQUEST, message)
