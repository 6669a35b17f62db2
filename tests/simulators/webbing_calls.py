"""Raw SOAP calls to the Webbing-like simulator, written by hand as an integrator would."""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from xml.etree import ElementTree

import httpx

from models.identifiers import make_iccid

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12_NS = "http://www.w3.org/2003/05/soap-envelope"
WWS_NS = "http://wws.iamwebbing.com/"
USERNAME, PASSWORD, WSKEY = "sim-user", "sim-password", "sim-wskey"
CREDENTIALS = {"Username": USERNAME, "Password": PASSWORD, "WSKey": WSKEY}
_serial = itertools.count(1)
ENDPOINTS = {
    "GetProductsList": "/service/Service.asmx",
    "GetDeviceUsage": "/usage/Usage.asmx",
}


def envelope(
    method: str,
    body: str = "",
    credentials: dict[str, str] | None = None,
    wrapper: str | None = None,
    soap_ns: str = SOAP_NS,
) -> str:
    """A call with its fields in ``<{method}Request>`` (``wrapper`` names another element;
    ``""``: none)."""
    given = CREDENTIALS if credentials is None else credentials
    header = "".join(f"<{k}>{v}</{k}>" for k, v in given.items())
    name = f"{method}Request" if wrapper is None else wrapper
    inner = f"<{name}>{body}</{name}>" if name else body
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{soap_ns}">'
        f'<soap:Header><Credentials xmlns="{WWS_NS}">{header}</Credentials></soap:Header>'
        f'<soap:Body><{method} xmlns="{WWS_NS}">{inner}</{method}></soap:Body></soap:Envelope>'
    )


def fields(**values: Any) -> str:
    """Child elements; a dict value nests (``PaginationRequest={...}``)."""
    parts = []
    for name, value in values.items():
        inner = fields(**value) if isinstance(value, dict) else str(value)
        parts.append(f"<{name}>{inner}</{name}>")
    return "".join(parts)


def local(tag: str) -> str:
    return tag.rpartition("}")[2]


def record(element: ElementTree.Element) -> dict[str, str]:
    return {local(c.tag): c.text or "" for c in element if not len(c)}


@dataclass
class Answer:
    status: int
    result: ElementTree.Element | None
    fault: dict[str, str] | None

    @property
    def head(self) -> dict[str, str]:
        assert self.result is not None, self.fault
        return record(self.result)

    @property
    def ok(self) -> bool:
        return self.head["Success"] == "true"

    @property
    def code(self) -> int:
        return int(self.head["ResponseCode"])

    def one(self, name: str) -> dict[str, str]:
        assert self.result is not None, self.fault
        return record(next(c for c in self.result if local(c.tag) == name))

    def many(self, container: str) -> list[dict[str, str]]:
        assert self.result is not None, self.fault
        found = [c for c in self.result if local(c.tag) == container]
        return [record(item) for item in found[0]] if found else []

    @property
    def paging(self) -> tuple[int, int]:
        """(TotalRecords, TotalPages) of its PaginationResponse."""
        found = self.one("PaginationResponse")
        return int(found["TotalRecords"]), int(found["TotalPages"])


async def call(
    http: httpx.AsyncClient,
    method: str,
    body: str = "",
    *,
    credentials: dict[str, str] | None = None,
    raw: str | bytes | None = None,
    endpoint: str | None = None,
    action: str | None = None,
    wrapper: str | None = None,
    timeout: float = 5.0,
) -> Answer:
    """POSTs one call; ``raw`` replaces the whole envelope (for hostile input)."""
    path = endpoint or ENDPOINTS.get(method, "/devices/Devices.asmx")
    headers = {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{WWS_NS}{method}"' if action is None else action,
    }
    content = raw if raw is not None else envelope(method, body, credentials, wrapper)
    response = await http.post(path, content=content, headers=headers, timeout=timeout)
    return parse(response)


def parse(response: httpx.Response) -> Answer:
    if not response.content or not response.content.startswith(b"<?xml"):
        return Answer(response.status_code, None, None)
    root = ElementTree.fromstring(response.content)
    soap_ns = root.tag[1:].partition("}")[0]
    body = root.find(f"{{{soap_ns}}}Body")
    assert body is not None
    fault = body.find(f"{{{soap_ns}}}Fault")
    if fault is not None:
        return Answer(response.status_code, None, record(fault))
    result = body[0][0]
    assert local(result.tag).endswith("Result")
    return Answer(response.status_code, result, None)


def new_iccid() -> str:
    return make_iccid(f"8944{next(_serial) + 6_000_000:014d}")


def moment(text: str) -> datetime:
    return datetime.strptime(text, "%m/%d/%Y %H:%M:%S.%f").replace(tzinfo=UTC)


async def enrolled(sim: httpx.AsyncClient) -> str:
    iccid = new_iccid()
    assert (await sim.post("/_sim/esims", json={"iccids": [iccid]})).json() == {"added": 1}
    return iccid


def device_id(iccid: str) -> str:
    return fields(ServiceDeviceIdentifier={"ICCID": iccid})


async def change(sim: httpx.AsyncClient, iccid: str, product: str) -> Answer:
    answer = await call(
        sim, "ChangeServiceDeviceProduct", device_id(iccid) + fields(ProductID=product)
    )
    assert answer.ok, answer.head
    return answer


async def device(sim: httpx.AsyncClient, iccid: str) -> dict[str, str]:
    """The device's ServiceDeviceRecord."""
    answer = await call(sim, "GetServiceDevices", fields(DeviceIdentifier={"ICCID": iccid}))
    [found] = answer.many("ServiceDevices")
    return found


async def until(
    sim: httpx.AsyncClient, iccid: str, product: str, timeout: float = 5
) -> dict[str, str]:
    """The device's record once it shows ``product`` (``"0"``: none)."""
    deadline = time.monotonic() + timeout
    while (found := await device(sim, iccid))["ProductID"] != product:
        assert time.monotonic() < deadline, f"{iccid} never showed product {product}: {found}"
        await asyncio.sleep(0.02)
    return found


async def timeline(sim: httpx.AsyncClient, iccid: str) -> list[dict[str, str | None]]:
    intervals: list[dict[str, str | None]] = (await sim.get(f"/_sim/timeline/{iccid}")).json()[
        "intervals"
    ]
    return intervals


async def ledger(sim: httpx.AsyncClient, iccid: str) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = (await sim.get("/_sim/ledger", params={"iccid": iccid})).json()[
        "entries"
    ]
    return entries
