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
WWS_NS = "http://wws.iamwebbing.com/"
USERNAME, PASSWORD, WSKEY = "sim-user", "sim-password", "sim-wskey"
CREDENTIALS = {"Username": USERNAME, "Password": PASSWORD, "WSKey": WSKEY}
_serial = itertools.count(1)
ENDPOINTS = {
    "GetProductsList": "/accounts/Accounts.asmx",
    "GetOnlineDeviceUsage": "/usage/Usage.asmx",
    "GetDeviceUsage": "/usage/Usage.asmx",
    "GetServiceDevice": "/devices/Devices.asmx",
}


def envelope(method: str, body: str = "", credentials: dict[str, str] | None = None) -> str:
    given = CREDENTIALS if credentials is None else credentials
    header = "".join(f"<{k}>{v}</{k}>" for k, v in given.items())
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}">'
        f'<soap:Header><Credentials xmlns="{WWS_NS}">{header}</Credentials></soap:Header>'
        f'<soap:Body><{method} xmlns="{WWS_NS}">{body}</{method}></soap:Body></soap:Envelope>'
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


async def call(
    http: httpx.AsyncClient,
    method: str,
    body: str = "",
    *,
    credentials: dict[str, str] | None = None,
    raw: str | bytes | None = None,
    endpoint: str | None = None,
    action: str | None = None,
) -> Answer:
    """POSTs one call; ``raw`` replaces the whole envelope (for hostile input)."""
    path = endpoint or ENDPOINTS.get(method, "/service/Service.asmx")
    headers = {
        "Content-Type": "text/xml; charset=utf-8",
        "SOAPAction": f'"{WWS_NS}{method}"' if action is None else action,
    }
    content = raw if raw is not None else envelope(method, body, credentials)
    response = await http.post(path, content=content, headers=headers)
    return parse(response)


def parse(response: httpx.Response) -> Answer:
    if not response.content or not response.content.startswith(b"<?xml"):
        return Answer(response.status_code, None, None)
    root = ElementTree.fromstring(response.content)
    body = root.find(f"{{{SOAP_NS}}}Body")
    assert body is not None
    fault = body.find(f"{{{SOAP_NS}}}Fault")
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


async def order(sim: httpx.AsyncClient, iccid: str, product: str, ref: str = "") -> str:
    answer = await call(
        sim, "AddServiceDeviceProduct", fields(ICCID=iccid, ProductID=product, Reference=ref)
    )
    assert answer.ok, answer.head
    return answer.one("ServiceDeviceProduct")["ServiceDeviceProductID"]


async def instance(sim: httpx.AsyncClient, instance_id: str) -> dict[str, str]:
    answer = await call(sim, "GetServiceDeviceProduct", fields(ServiceDeviceProductID=instance_id))
    return answer.one("ServiceDeviceProduct")


async def until(sim: httpx.AsyncClient, instance_id: str, status: str) -> dict[str, str]:
    deadline = time.monotonic() + 5
    while (found := await instance(sim, instance_id))["StatusID"] != status:
        assert time.monotonic() < deadline, f"instance never reached StatusID {status}"
        await asyncio.sleep(0.05)
    return found


async def ledger(sim: httpx.AsyncClient, iccid: str) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = (await sim.get("/_sim/ledger", params={"iccid": iccid})).json()[
        "entries"
    ]
    return entries
