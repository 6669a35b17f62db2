"""The Webbing account as the carrier doctor reads it: each call made exactly as the
client makes it (its endpoint, envelope, ``SOAPAction`` and credentials), once per run.

Only the Get methods are ever sent. An endpoint's other methods are looked for in what a
``GET`` of the endpoint lists (an ASMX service lists its operations there): a read of a
page, never a call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.etree.ElementTree import Element

import httpx

from carriers.verdicts import CannotCheck, NotChecked
from carriers.webbing import GENERAL_ERROR, Wire, http_client, soap_action
from carriers.webbing_soap import (
    SoapFault,
    UnreadableAnswer,
    call_envelope,
    fields,
    read_answer,
    rows,
)
from config import Settings

ONE = {"PageSize": 1, "PageNumber": 1}
DEVICE_PAGE = {"PageSize": 20, "PageNumber": 1}
CATALOGUE_PAGE = {"PageSize": 1000, "PageNumber": 1}  # the most one page holds
NO_DEVICE = {"ServiceDeviceID": "0"}  # ServiceDeviceIDs are positive


@dataclass(frozen=True)
class Answer:
    """One call's answer: its ``<Method>Result``, its Fault, or why it is neither."""

    method: str
    status: int
    content_type: str
    result: Element | None = None
    fault: SoapFault | None = None
    unreadable: str = ""

    @property
    def head(self) -> dict[str, str]:
        return fields(self.result) if self.result is not None else {}

    @property
    def success(self) -> bool:
        return self.head.get("Success") == "true"

    @property
    def code(self) -> str:
        return self.head.get("ResponseCode", "")

    def rows(self, container: str, item: str) -> list[dict[str, str]]:
        """The records of a successful answer; raises NotChecked for any other."""
        if self.result is None or not self.success:
            raise NotChecked(self.said())
        return rows(self.result, container, item)

    def said(self) -> str:
        """The answer in a few words, for a line of the report."""
        if self.fault is not None:
            return f"{self.method}: Fault {self.fault.code} {self.fault.message!r}"
        if self.result is None:
            return f"{self.method}: HTTP {self.status}, {self.unreadable}"
        if self.success:
            return f"{self.method}: Success=true"
        head = self.head
        return (
            f"{self.method}: Success={head.get('Success')} {self.code} "
            f"{head.get('ResponseDescription', '')!r}"
        )


class WebbingAccount:
    """The configured Webbing account, called as the client calls it, per ``wire``."""

    def __init__(
        self,
        settings: Settings,
        iccid: str | None,
        wire: Wire,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        webbing = settings.webbing
        credentials = {
            "Username": webbing.username,
            "Password": webbing.password.get_secret_value(),
            "WSKey": webbing.wskey.get_secret_value(),
        }
        missing = [f"WEBBING__{k.upper()}" for k, v in credentials.items() if not v]
        if missing:
            raise CannotCheck(" and ".join(missing) + " not set")
        self.base_url, self.iccid, self.wire = webbing.base_url, iccid, wire
        self.currency = webbing.currency
        self._credentials = credentials
        self._client = http_client(webbing.base_url, settings.carrier_timeout_seconds, transport)
        self._answers: dict[str, Answer] = {}
        self._pages: dict[str, tuple[int, str]] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def call(self, method: str, params: Mapping[str, Any]) -> Answer:
        """The answer to one read (a Get method only), made once per run."""
        if not method.startswith("Get"):
            raise ValueError(f"the doctor sends no {method}")
        key = f"{method} {params!r}"
        if key not in self._answers:
            self._answers[key] = await self._send(method, params)
        return self._answers[key]

    async def listing(self, path: str) -> tuple[int, str]:
        """``GET`` of an endpoint: its status and page, read once per run."""
        if path not in self._pages:
            response = await self._request("GET", path)
            self._pages[path] = (response.status_code, response.text)
        return self._pages[path]

    async def products(self) -> Answer:
        """One product; an account that refuses the read stops the run."""
        answer = await self.call("GetProductsList", {"PaginationRequest": ONE})
        unavailable = answer.status == 429 or answer.status >= 500
        if answer.result is None and answer.fault is None and unavailable:
            raise CannotCheck(f"webbing at {self.base_url} is unavailable: {answer.said()}")
        if answer.result is None and answer.status == 404:
            raise CannotCheck(
                f"webbing at {self.base_url}: {answer.said()} (check WEBBING__BASE_URL)"
            )
        if answer.result is not None and not answer.success and answer.code != GENERAL_ERROR:
            raise CannotCheck(
                f"webbing refuses the account's first read ({answer.said()}): check "
                "WEBBING__USERNAME, WEBBING__PASSWORD and WEBBING__WSKEY"
            )
        return answer

    async def catalogue(self) -> list[dict[str, str]]:
        answer = await self.call("GetProductsList", {"PaginationRequest": CATALOGUE_PAGE})
        return answer.rows("Products", "ProductRecord")

    async def devices(self) -> Answer:
        """The first page of the account's devices."""
        params = {"OnlyActivePlansDevices": "false", **_ALL, "PaginationRequest": DEVICE_PAGE}
        return await self.call("GetServiceDevices", params)

    async def device(self) -> dict[str, str]:
        """The ``--iccid`` device's record, read as the client reads it."""
        if self.iccid is None:
            raise NotChecked("needs --iccid")
        params = {
            "DeviceIdentifier": {"ICCID": self.iccid},
            "OnlyActivePlansDevices": "false",
            **_ALL,
            "PaginationRequest": ONE,
        }
        answer = await self.call("GetServiceDevices", params)
        found = answer.rows("ServiceDevices", "ServiceDeviceRecord")
        if not found:
            raise NotChecked(f"no service device {self.iccid}")
        return found[0]

    async def known_devices(self) -> list[dict[str, str]]:
        """The account's first page of devices, and the ``--iccid`` one."""
        found: list[dict[str, str]] = []
        try:
            found = (await self.devices()).rows("ServiceDevices", "ServiceDeviceRecord")
        except NotChecked:
            if self.iccid is None:
                raise
        if self.iccid is not None:
            found.append(await self.device())
        by_iccid = {d.get("ICCID", ""): d for d in found}
        if not by_iccid:
            raise NotChecked("no device on the account's first page")
        return list(by_iccid.values())

    async def usage(self, start: date, end: date) -> Answer:
        """``GetDeviceUsage`` of the ``--iccid`` device, else of the account's first one
        (else of no device: the method still answers on its endpoint)."""
        params = {
            "ServiceDeviceIdentifier": await self._some_device(),
            "AssignmentID": 0,
            "ProductID": 0,
            "StartDate": f"{start:%m/%d/%Y}",
            "EndDate": f"{end:%m/%d/%Y}",
            "DeviceTimeInterval": "Unknown",
            "PaginationRequest": ONE,
        }
        return await self.call("GetDeviceUsage", params)

    async def _some_device(self) -> dict[str, str]:
        if self.iccid is not None:
            return {"ICCID": self.iccid}
        try:
            found = (await self.devices()).rows("ServiceDevices", "ServiceDeviceRecord")
        except NotChecked:
            found = []
        return {"ICCID": found[0]["ICCID"]} if found and found[0].get("ICCID") else NO_DEVICE

    async def _send(self, method: str, params: Mapping[str, Any]) -> Answer:
        response = await self._request(
            "POST",
            self.wire.endpoints[method],
            content=call_envelope(method, self._credentials, params),
            headers={"SOAPAction": soap_action(method)},
        )
        kind = response.headers.get("content-type", "")
        try:
            found = read_answer(response.content, method)
        except UnreadableAnswer as exc:
            return Answer(method, response.status_code, kind, unreadable=str(exc))
        if isinstance(found, SoapFault):
            return Answer(method, response.status_code, kind, fault=found)
        return Answer(method, response.status_code, kind, result=found)

    async def _request(self, verb: str, path: str, **options: Any) -> httpx.Response:
        try:
            return await self._client.request(verb, path, **options)
        except httpx.TransportError as exc:
            raise CannotCheck(f"webbing at {self.base_url} does not answer: {exc!r}") from exc


_ALL = {"BranchID": 0, "AccountID": 0, "AssignmentID": 0}


def lists(page: str, method: str) -> bool:
    """Whether an endpoint's page names the method as a word."""
    return re.search(rf"\b{re.escape(method)}\b", page) is not None


def named_fields(shape: str) -> list[str]:
    """The field names in a shape like ``Record{A, B, C}``."""
    inner = re.search(r"\{(.*)\}", shape)
    return [f.strip() for f in inner.group(1).split(",")] if inner else []


def probe_days() -> tuple[date, date]:
    """The latest UTC day whose day of the month is over 12 (a ``dd/MM`` reader refuses
    it as ``MM/dd/yyyy``), and today."""
    today = day = datetime.now(UTC).date()
    while day.day <= 12:
        day -= timedelta(days=1)
    return day, today
