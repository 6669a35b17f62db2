"""The Webbing client: WWS SOAP 1.1 over one long-lived httpx client.

Spoken as CARRIERS.md section 1 records it: every call is a POST of an envelope to the
method's ASMX endpoint with ``SOAPAction``, the credentials in the SOAP header and the
parameters in the ``<Method>Request`` element (:mod:`carriers.webbing_soap`); lists page
with ``PaginationRequest``/``PaginationResponse``. A service device carries one product,
replaced by ``ChangeServiceDeviceProduct``; devices are suspended and activated; usage is
polled. Data in MB (1 MB = 10^6 bytes), times ``MM/dd/yyyy HH:mm:ss.fff`` UTC. These
readings, the endpoints, the envelope's shape and the choices made where the record is
silent are named once, in :data:`WIRE`, and the carrier doctor checks them.

Error mapping (reads are safe to repeat; order/activate/deactivate change state):

- connection refused, connect/pool timeout (nothing was sent) → ``CarrierUnavailable``
- 429 and 503 → ``CarrierUnavailable`` with ``retry_after`` from ``Retry-After``
- ``Success=false`` with ResponseCode 1000 (general error) → ``CarrierUnavailable``
- ``Success=false`` with any other ResponseCode → ``CarrierRejected`` (code = the
  ResponseCode, message = ResponseDescription); a ``soap:Client`` Fault (the service
  could not read the call) → ``CarrierRejected`` with the faultcode
- read/write timeout, dropped connection, 502, 504, other 5xx, and any answer that cannot
  be read safely (malformed, truncated, oversized, or carrying a DTD, entities or
  external references — refused by defusedxml before anything is expanded) or used (a
  product without an allowance, ``DailyHighSpeedMB`` 0) →
  ``CarrierOutcomeUnknown`` on a state change (the call may have been carried out),
  ``CarrierUnavailable`` on a read; the message says what was wrong
- other 4xx (a gateway refusing the call) → ``CarrierRejected`` with the status as code
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from types import MappingProxyType
from typing import Any, TypeVar
from xml.etree.ElementTree import Element

import httpx

from carriers.base import CarrierLine, CarrierProduct, LineUsage, UsagePage
from carriers.errors import (
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
    retry_after_seconds,
)
from carriers.ratelimit import limited
from carriers.webbing_records import STATUS_IDS, SUSPENDED, Device, LineName, line, product
from carriers.webbing_soap import (
    CONTENT_TYPE,
    WWS_NS,
    SoapFault,
    UnreadableAnswer,
    call_envelope,
    child,
    fields,
    read_answer,
    rows,
)
from config import Settings

GENERAL_ERROR = "1000"
MAX_ANSWER_BYTES = 4 * 1024 * 1024
DEVICES, USAGE, SERVICE = "/devices/Devices.asmx", "/usage/Usage.asmx", "/service/Service.asmx"


@dataclass(frozen=True)
class Wire:
    """How this client speaks WWS, named once: third-party code on the record
    (CARRIERS.md section 1), and this client's choices where the record is silent
    ([NOT PUBLIC], marked). ``python -m carriers.doctor webbing`` checks each against an
    account."""

    endpoints: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(
            {
                "GetProductsList": SERVICE,
                "GetServiceDevices": DEVICES,
                "ChangeServiceDeviceProduct": DEVICES,
                "ActivateServiceDevice": DEVICES,
                "SuspendServiceDevice": DEVICES,
                "GetDeviceUsage": USAGE,
            }
        )
    )
    """The ASMX endpoint of each method the client calls."""
    soap_version: str = "1.1"
    """``text/xml`` envelopes in the SOAP 1.1 namespace, ``SOAPAction`` naming the method
    (unquoted, as the record's client sends it)."""
    credentials_header: tuple[str, ...] = ("Username", "Password", "WSKey")
    """``<Credentials xmlns="http://wws.iamwebbing.com/">`` in the SOAP header, every call."""
    request_wrapper: str | None = "{Method}Request"
    """The element between the method and its parameters (the WSDL's parameter name; the
    record's exceptions are methods this client does not call)."""
    paging: str = (
        "PaginationRequest{PageSize, PageNumber} -> PaginationResponse{TotalRecords, TotalPages}"
    )
    """Pages count from 1; the totals in ``PaginationResponse``, a child of the result."""
    units: str = "MB"
    """Data in MB, 1 MB = 10^6 bytes (``DataUsage``, ``DailyHighSpeedMB``)."""
    date_format: str = "MM/dd/yyyy"
    """Dates sent as ``MM/dd/yyyy``; times read as ``MM/dd/yyyy HH:mm:ss.fff`` UTC."""
    status_ids: tuple[str, ...] = STATUS_IDS
    """A device's ``StatusID``: 2 Inactive, 3 Active, 4 Suspended, 5 Deactivated."""
    products: str = (
        "Products/ProductRecord{ProductID, ProductName, DailyHighSpeedMB, ValidityHours,"
        " ResetRule, ResetUtcOffsetMinutes, ThrottleKbps, Price}"
    )
    """[NOT PUBLIC] ``GetProductsList``'s answer: a product is a pass of
    ``DailyHighSpeedMB`` for ``ValidityHours`` (or to its reset boundary)."""
    device_product: str = "ServiceDeviceRecord{ProductID, UpdatedAtUtc, DataUsage}"
    """[NOT PUBLIC] A device record carries, beside the record's ``ProductName``, the
    ``ProductID`` on it (0: none), ``UpdatedAtUtc`` = when that product took effect, and
    ``DataUsage`` = the MB used on it since."""
    change: str = (
        "ChangeServiceDeviceProduct buys a pass that replaces the current one once in effect"
    )
    """[NOT PUBLIC] A product change is a purchase; it takes effect after the carrier's
    activation latency, the old product serving until then, and no record shows it
    pending. A change to the product on the device renews it."""
    suspend: str = "SuspendServiceDevice ends the pass on the device"
    """[NOT PUBLIC] A suspended device has no service; a pass for it is bought anew."""
    currency: str = "USD"
    """[NOT PUBLIC] The currency of a product's ``Price``: no record names it, so the
    account's is the operator's word (``WEBBING__CURRENCY``), stored on every product and
    on every line bought."""
    package_price: str = "a device record shows no price of the product change"
    """[NOT PUBLIC] What Webbing charged for a product change: ``ChangeServiceDeviceProduct``'s
    answer beyond its status is not public, and a ``ServiceDeviceRecord`` shows no price.
    A line's price is the catalogue's ``Price`` when it was ordered; the audit finds a
    Webbing line with no recorded price (``unpriced_purchase``, flagged) but compares no
    amount (``price_mismatch`` needs a price the package shows). The doctor confirms the
    device record shows none."""


WIRE = Wire()
_TRANSIENT_STATUSES = {429, 503}

T = TypeVar("T")


class WebbingCarrier:
    """The ``Carrier`` for Webbing; raises only ``CarrierError``s.

    One product per device, replaced in place (``rotation`` ``in_place``): an order is a
    ``ChangeServiceDeviceProduct`` made at the switch, a line is the device's product
    from one change on (:mod:`carriers.webbing_records`), and every read of a line is one
    ``GetServiceDevices`` for its ICCID: the same for an eSIM of a day and of a year.
    """

    name = "webbing"

    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        wskey: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = 100,
        rate_limit_per_second: float = 0.0,
        in_doubt_seconds: float = 60.0,
        currency: str = WIRE.currency,
    ) -> None:
        self.page_size = page_size
        self.in_doubt_seconds = in_doubt_seconds
        self.currency = currency
        transport = limited(transport, rate_limit_per_second)
        self._credentials = {"Username": username, "Password": password, "WSKey": wskey}
        self._client = http_client(base_url, timeout, transport)
        self._products: dict[str, CarrierProduct] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> WebbingCarrier:
        webbing = settings.webbing
        return cls(
            webbing.base_url,
            webbing.username,
            webbing.password.get_secret_value(),
            webbing.wskey.get_secret_value(),
            timeout=settings.carrier_timeout_seconds,
            rate_limit_per_second=settings.webbing.rate_limit_per_second,
            in_doubt_seconds=webbing.in_doubt_seconds,
            currency=webbing.currency,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_products(self) -> list[CarrierProduct]:
        records = await self._all("GetProductsList", "Products", "ProductRecord", {})
        products = [self._read(lambda r: product(r, self.currency), p, False) for p in records]
        self._products.update((p.carrier_product_id, p) for p in products)
        return products

    async def order(
        self,
        iccid: str,
        carrier_product_id: str,
        reference: str,
        start_at: datetime | None = None,
    ) -> CarrierLine:
        """Buy the pass by changing the device's product; it is scheduled until in
        effect. Webbing takes no start time and no reference."""
        offer = await self._product(carrier_product_id, True)
        device = await self._device(iccid)
        if device.status_id == SUSPENDED:  # a paused balance's: it takes no product so
            await self._resume(iccid)
            device = await self._device(iccid)
        asked = datetime.now(UTC)
        params = {"ServiceDeviceIdentifier": {"ICCID": iccid}, "ProductID": carrier_product_id}
        await self._call("ChangeServiceDeviceProduct", params, True)
        name = LineName(iccid, carrier_product_id, "r", asked, device.since)
        bought = {
            "line_id": str(name),
            "iccid": iccid,
            "carrier_product_id": carrier_product_id,
            "reference": None,
            "status": "scheduled",
            "ordered_at": asked,
            "allowance_bytes": offer.allowance_bytes,
        }
        return self._read(CarrierLine.model_validate, bought, True)

    async def activate(self, line_id: str) -> CarrierLine:
        """The line, once in effect: a product change starts itself, so this is a read
        (a suspended device is resumed first)."""
        name = self._name(line_id)
        device = await self._device(name.iccid)
        if device.status_id == SUSPENDED:
            await self._resume(name.iccid)
            device = await self._device(name.iccid)
        return await self._line(name, device)

    async def _resume(self, iccid: str) -> None:
        params = {"ServiceDeviceIdentifier": {"ICCID": iccid}}
        await self._call("ActivateServiceDevice", params, True)

    async def deactivate(self, line_id: str) -> CarrierLine:
        """End the line: suspend the device while the line is on it; a line already
        replaced or run out needs nothing."""
        found = await self.get_line(line_id)
        if found.status != "active":
            return found
        params = {"ServiceDeviceIdentifier": {"ICCID": found.iccid}}
        await self._call("SuspendServiceDevice", params, True)
        suspended = await self._device(found.iccid)
        ended_at = suspended.status_changed_at or datetime.now(UTC)
        return found.model_copy(update={"status": "ended", "ended_at": ended_at})

    async def get_line(self, line_id: str) -> CarrierLine:
        name = self._name(line_id)
        return await self._line(name, await self._device(name.iccid))

    async def _line(self, name: LineName, device: Device) -> CarrierLine:
        """The line ``name`` as this read of its device shows it."""
        offer = await self._product(name.product_id, False)
        return self._read(lambda d: line(name, d, offer, datetime.now(UTC)), device, False)

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        """The device's product now, as a line (Webbing keeps no history of passes)."""
        device = await self._device(iccid)
        if device.product_id == "0" or device.since is None:
            return []
        name = LineName(iccid, device.product_id, "e", device.since)
        offer = await self._product(device.product_id, False)
        return [self._read(lambda d: line(name, d, offer, datetime.now(UTC)), device, False)]

    async def open_lines(self, iccid: str, carrier_product_id: str) -> list[CarrierLine]:
        """The product's line on the device, if in effect: one read at any age."""
        return [
            found
            for found in await self.find_lines(iccid)
            if found.status != "ended" and found.carrier_product_id == carrier_product_id
        ]

    async def usage(self, line_id: str) -> LineUsage:
        found = await self.get_line(line_id)
        return LineUsage(
            line_id=found.line_id,
            used_bytes=found.used_bytes,
            allowance_bytes=found.allowance_bytes,
            observed_at=datetime.now(UTC),
            iccid=found.iccid,
        )

    async def usage_page(self, page: int, since: date, page_size: int) -> UsagePage:
        """``GetServiceDevices`` of the whole account, devices with a product only: the
        MB each has used on its product, one page per call. ``since`` is not needed:
        a device's usage is of the pass on it now."""
        if not self._products:
            await self.list_products()
        params = {
            "OnlyActivePlansDevices": "true",
            "BranchID": 0,
            "AccountID": 0,
            "AssignmentID": 0,
            "PaginationRequest": {"PageSize": page_size, "PageNumber": page},
        }
        result = await self._call("GetServiceDevices", params, False)
        now = datetime.now(UTC)

        def read(r: Element) -> UsagePage:
            found = []
            for record in rows(r, "ServiceDevices", "ServiceDeviceRecord"):
                device = Device.of(record)
                if device.since is None or device.product_id == "0":
                    continue
                name = LineName(device.iccid, device.product_id, "e", device.since)
                found.append(
                    LineUsage(
                        line_id=str(name),
                        used_bytes=device.used_bytes,
                        allowance_bytes=self._products[device.product_id].allowance_bytes
                        if device.product_id in self._products
                        else 0,
                        observed_at=now,
                        iccid=device.iccid,
                    )
                )
            paging = fields(child(r, "PaginationResponse"))
            return UsagePage(
                usage=found,
                page=page,
                pages=int(paging["TotalPages"]),
                total=int(paging["TotalRecords"]),
            )

        return self._read(read, result, False)

    async def _device(self, iccid: str) -> Device:
        params = {
            "DeviceIdentifier": {"ICCID": iccid},
            "OnlyActivePlansDevices": "false",
            "BranchID": 0,
            "AccountID": 0,
            "AssignmentID": 0,
            "PaginationRequest": {"PageSize": 1, "PageNumber": 1},
        }
        result = await self._call("GetServiceDevices", params, False)

        def read(r: Element) -> Device:
            found = rows(r, "ServiceDevices", "ServiceDeviceRecord")
            if not found:
                raise CarrierRejected(self.name, f"no service device {iccid}", code="404")
            return Device.of(found[0])

        try:
            return read(result)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise self._lost(False, f"unexpected answer: {exc!r}") from exc

    async def _product(self, carrier_product_id: str, changes_state: bool) -> CarrierProduct:
        """A product of the catalogue (read once per process): a line's allowance and
        window are its product's."""
        if carrier_product_id not in self._products:
            await self.list_products()
        if carrier_product_id not in self._products:
            raise CarrierRejected(self.name, f"unknown product {carrier_product_id}", code="404")
        return self._products[carrier_product_id]

    def _name(self, line_id: str) -> LineName:
        try:
            return LineName.parse(line_id)
        except ValueError as exc:
            raise CarrierRejected(self.name, str(exc), code="400") from exc

    async def _all(
        self, method: str, container: str, item: str, params: dict[str, Any]
    ) -> list[dict[str, str]]:
        """Every record of a paged list, page by page until ``TotalPages``."""
        records: list[dict[str, str]] = []
        number = 1
        while True:
            paging = {"PageSize": self.page_size, "PageNumber": number}
            result = await self._call(method, {**params, "PaginationRequest": paging}, False)
            batch = rows(result, container, item)
            pages = self._read(
                lambda r: int(fields(child(r, "PaginationResponse"))["TotalPages"]), result, False
            )
            records.extend(batch)
            if not batch or number >= pages:
                return records
            number += 1

    def _read(self, convert: Callable[[Any], T], data: Any, changes_state: bool) -> T:
        """Converts an answer; one we cannot read counts as no answer at all."""
        try:
            return convert(data)
        except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
            raise self._lost(changes_state, f"unexpected answer: {exc!r}") from exc

    async def _call(self, method: str, params: dict[str, Any], changes_state: bool) -> Element:
        """The ``{method}Result`` of a successful call; raises a ``CarrierError`` otherwise."""
        envelope = call_envelope(method, self._credentials, params)
        headers = {"SOAPAction": soap_action(method)}
        try:
            async with self._client.stream(
                "POST", WIRE.endpoints[method], content=envelope, headers=headers
            ) as response:
                body = await self._body(response, method, changes_state)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise CarrierUnavailable(self.name, f"{method}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise self._lost(changes_state, f"{method}: {exc!r}") from exc

        status = response.status_code
        if status in _TRANSIENT_STATUSES:
            retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            raise CarrierUnavailable(self.name, f"{method}: HTTP {status}", retry_after)
        if 400 <= status < 500:
            raise CarrierRejected(self.name, f"{method}: HTTP {status}", code=str(status))
        if status not in (200, 500):  # SOAP 1.1 sends its Faults with a 500
            raise self._lost(changes_state, f"{method}: HTTP {status}")
        try:
            answer = read_answer(body, method)
        except UnreadableAnswer as exc:
            raise self._lost(changes_state, f"{method}: HTTP {status}, {exc}") from exc
        if isinstance(answer, SoapFault):
            if answer.client_error:
                raise CarrierRejected(self.name, f"{method}: {answer.message}", code=answer.code)
            raise self._lost(changes_state, f"{method}: {answer.code} {answer.message}")
        if status != 200:
            raise self._lost(changes_state, f"{method}: HTTP {status} without a Fault")
        return self._outcome(method, answer, changes_state)

    def _outcome(self, method: str, result: Element, changes_state: bool) -> Element:
        """Success, or the business error ``Success=false`` carries."""
        head = fields(result)
        success, code = head.get("Success"), head.get("ResponseCode", "")
        description = head.get("ResponseDescription") or "no description"
        if success == "true":
            return result
        if success != "false":
            raise self._lost(changes_state, f"{method}: answer without Success")
        if code == GENERAL_ERROR:
            raise CarrierUnavailable(self.name, f"{method}: {code} {description}")
        raise CarrierRejected(self.name, f"{method}: {description}", code=code)

    async def _body(self, response: httpx.Response, method: str, changes_state: bool) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_ANSWER_BYTES:
                raise self._lost(changes_state, f"{method}: answer over {MAX_ANSWER_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _lost(
        self, changes_state: bool, message: str
    ) -> CarrierUnavailable | CarrierOutcomeUnknown:
        if changes_state:
            return CarrierOutcomeUnknown(self.name, message)
        return CarrierUnavailable(self.name, message)


def http_client(
    base_url: str, timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The client's HTTP settings, for it and its doctor."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"Content-Type": CONTENT_TYPE, "Accept": "text/xml"},
        timeout=timeout,
        transport=transport,
    )


def soap_action(method: str) -> str:
    return f"{WWS_NS}{method}"
