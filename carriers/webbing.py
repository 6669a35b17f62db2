"""The Webbing client: WWS-shaped SOAP 1.1 over one long-lived httpx client.

Every call is a POST of an envelope to the method's ASMX endpoint with ``SOAPAction`` and
the credentials in the SOAP header (:mod:`carriers.webbing_soap`). Webbing reports data
in MB (1 MB = 10^6 bytes), times as ``MM/dd/yyyy HH:mm:ss.fff`` UTC (a bare
``MM/dd/yyyy`` date counts as 00:00 UTC), and an instance's StatusID as 2 Inactive →
``scheduled``, 3 Active → ``active``, 4 Suspended → ``scheduled`` (not serving, can be
activated again), 5 Deactivated → ``ended``. A line's id is its ServiceDeviceProductID.
These readings, the endpoints and the envelope's shape are named once, in :data:`WIRE`,
and the carrier doctor checks them against an account.

Error mapping (reads are safe to repeat; order/activate/deactivate change state):

- connection refused, connect/pool timeout (nothing was sent) → ``CarrierUnavailable``
- 429 and 503 → ``CarrierUnavailable`` with ``retry_after`` from ``Retry-After``
- ``Success=false`` with ResponseCode 1000 (general error) → ``CarrierUnavailable``
- ``Success=false`` with any other ResponseCode → ``CarrierRejected`` (code = the
  ResponseCode, message = ResponseDescription); a ``soap:Client`` Fault (the service
  could not read the call) → ``CarrierRejected`` with the faultcode
- read/write timeout, dropped connection, 502, 504, other 5xx, and any answer that cannot
  be read safely (malformed, truncated, oversized, or carrying a DTD, entities or
  external references — refused by defusedxml before anything is expanded) or used (an
  instance without an allowance, ``DailyHighSpeedMB`` 0) →
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
from carriers.webbing_records import STATUS, line, product, usage
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


@dataclass(frozen=True)
class Wire:
    """How this client speaks WWS, named once: mostly third-party code on the record
    (CARRIERS.md section 1), partly this client's own choice where the record shows
    another shape or none. ``python -m carriers.doctor webbing`` checks each against an
    account."""

    endpoints: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType(
            {
                "GetProductsList": "/accounts/Accounts.asmx",
                "AddServiceDeviceProduct": "/service/Service.asmx",
                "ActivateServiceDeviceProduct": "/service/Service.asmx",
                "DeactivateServiceDeviceProduct": "/service/Service.asmx",
                "GetServiceDeviceProduct": "/service/Service.asmx",
                "GetServiceDeviceProducts": "/service/Service.asmx",
                "GetOnlineDeviceUsage": "/usage/Usage.asmx",
                "GetDeviceUsage": "/usage/Usage.asmx",
            }
        )
    )
    """The ASMX endpoint of each method (the record has GetProductsList on Service.asmx;
    the instance methods are not on it at all)."""
    soap_version: str = "1.1"
    """``text/xml`` envelopes in the SOAP 1.1 namespace, ``SOAPAction`` naming the method."""
    credentials_header: tuple[str, ...] = ("Username", "Password", "WSKey")
    """``<Credentials xmlns="http://wws.iamwebbing.com/">`` in the SOAP header, every call."""
    request_wrapper: str | None = None
    """The element between the method and its parameters: none, the parameters sit in
    ``<Method>`` itself (the record shows ``<Method><MethodRequest>...``, mostly)."""
    paging: str = "PaginationRequest{PageSize, PageNumber} -> TotalRecords, TotalPages"
    """Pages count from 1; the totals are read as children of ``<Method>Result`` (the
    record nests them in ``PaginationResponse``)."""
    units: str = "MB"
    """Data in MB, 1 MB = 10^6 bytes (``DailyHighSpeedMB``, ``TotalHSUsage``)."""
    date_format: str = "MM/dd/yyyy"
    """Dates sent and read as ``MM/dd/yyyy``; times ``MM/dd/yyyy HH:mm:ss.fff`` UTC."""
    status_ids: tuple[str, ...] = tuple(STATUS)
    """An instance's ``StatusID``: 2 Inactive, 3 Active, 4 Suspended, 5 Deactivated."""
    records: str = "carriers.webbing_records"
    """Products and instances carry the fields :mod:`carriers.webbing_records` reads."""


WIRE = Wire()
_TRANSIENT_STATUSES = {429, 503}

T = TypeVar("T")


class WebbingCarrier:
    """The ``Carrier`` for Webbing; raises only ``CarrierError``s."""

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
    ) -> None:
        self.page_size = page_size
        self.in_doubt_seconds = in_doubt_seconds
        transport = limited(transport, rate_limit_per_second)
        self._credentials = {"Username": username, "Password": password, "WSKey": wskey}
        self._client = http_client(base_url, timeout, transport)

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
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_products(self) -> list[CarrierProduct]:
        products = await self._all("GetProductsList", "Products", "Product", {})
        return [self._read(product, p, False) for p in products]

    async def order(
        self,
        iccid: str,
        carrier_product_id: str,
        reference: str,
        start_at: datetime | None = None,
    ) -> CarrierLine:
        params = {"ICCID": iccid, "ProductID": carrier_product_id, "Reference": reference}
        if start_at is not None:
            moment = start_at.astimezone(UTC)
            params["StartAtUtc"] = (
                moment.strftime("%m/%d/%Y %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
            )
        return await self._instance("AddServiceDeviceProduct", params, True)

    async def activate(self, line_id: str) -> CarrierLine:
        params = {"ServiceDeviceProductID": line_id}
        return await self._instance("ActivateServiceDeviceProduct", params, True)

    async def deactivate(self, line_id: str) -> CarrierLine:
        params = {"ServiceDeviceProductID": line_id}
        return await self._instance("DeactivateServiceDeviceProduct", params, True)

    async def get_line(self, line_id: str) -> CarrierLine:
        params = {"ServiceDeviceProductID": line_id}
        return await self._instance("GetServiceDeviceProduct", params, False)

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        instances = await self._all(
            "GetServiceDeviceProducts",
            "ServiceDeviceProducts",
            "ServiceDeviceProduct",
            {"ICCID": iccid},
        )
        return [self._read(line, i, False) for i in instances]

    async def open_lines(self, iccid: str, carrier_product_id: str) -> list[CarrierLine]:
        """The product's lines on the ICCID that have not ended (read from the whole
        list: this API has no status filter)."""
        return [
            line
            for line in await self.find_lines(iccid)
            if line.status != "ended" and line.carrier_product_id == carrier_product_id
        ]

    async def usage(self, line_id: str) -> LineUsage:
        params = {"ServiceDeviceProductID": line_id}
        result = await self._call("GetOnlineDeviceUsage", params, False)
        return self._read(usage, fields(result), False)

    async def usage_page(self, page: int, since: date, page_size: int) -> UsagePage:
        """``GetDeviceUsage`` without an ICCID: the account's usage, one page per call, of
        every instance active on or after ``since`` (a UTC date, as Webbing dates are)."""
        params = {
            "FromDate": since.strftime("%m/%d/%Y"),
            "PaginationRequest": {"PageSize": page_size, "PageNumber": page},
        }
        result = await self._call("GetDeviceUsage", params, False)

        def read(r: Element) -> UsagePage:
            head = fields(r)
            return UsagePage(
                usage=[usage(u) for u in rows(r, "DeviceUsages", "DeviceUsage")],
                page=page,
                pages=int(head["TotalPages"]),
                total=int(head["TotalRecords"]),
            )

        return self._read(read, result, False)

    async def _instance(self, method: str, params: dict[str, Any], writes: bool) -> CarrierLine:
        result = await self._call(method, params, writes)
        return self._read(lambda r: line(fields(child(r, "ServiceDeviceProduct"))), result, writes)

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
            pages = self._read(lambda r: int(fields(r)["TotalPages"]), result, False)
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
    return f'"{WWS_NS}{method}"'
