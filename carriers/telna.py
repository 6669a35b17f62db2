"""The Telna client: Telna Connect v2.1-shaped REST/JSON over one long-lived httpx client.

Requests carry the raw API key in ``Authorization`` and a fresh uuid4 ``Request-ID``.
Telna reports times in epoch milliseconds and data in bytes; lines come back as
:class:`~carriers.base.CarrierLine` with NOT_ACTIVE → ``scheduled``, ACTIVE → ``active``,
TERMINATED → ``ended``.

Error mapping (reads are GETs and safe to repeat; POSTs change state):

- connection refused, connect/pool timeout (nothing was sent) → ``CarrierUnavailable``
- 429 and 503 → ``CarrierUnavailable`` with ``retry_after`` from ``Retry-After``
- read/write timeout, dropped connection (``RemoteProtocolError``, ``ReadError``...),
  502, 504 and other 5xx → ``CarrierOutcomeUnknown`` on POST, ``CarrierUnavailable``
  on GET
- other 4xx → ``CarrierRejected`` with Telna's ``error`` message and the status as code
- a 2xx body that is not the expected JSON, or a package without an allowance (0 or
  less) → as a dropped connection (the request may have taken effect but its answer is
  unusable)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx

from carriers.base import CarrierLine, CarrierProduct, LineStatus, LineUsage
from carriers.errors import (
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
    retry_after_seconds,
)
from carriers.ratelimit import limited
from config import Settings

_STATUS: dict[str, LineStatus] = {
    "NOT_ACTIVE": "scheduled",
    "ACTIVE": "active",
    "TERMINATED": "ended",
}
_UNIT_SECONDS = {"SECOND": 1, "MINUTE": 60, "HOUR": 3600, "DAY": 86_400}
_TRANSIENT_STATUSES = {429, 503}

T = TypeVar("T")


class TelnaCarrier:
    """The ``Carrier`` for Telna; raises only ``CarrierError``s."""

    name = "telna"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = 100,
        rate_limit_per_second: float = 0.0,
        in_doubt_seconds: float = 60.0,
    ) -> None:
        self.page_size = page_size
        self.in_doubt_seconds = in_doubt_seconds
        transport = limited(transport, rate_limit_per_second)
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/v2.1",
            headers={"Authorization": api_key, "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TelnaCarrier:
        return cls(
            settings.telna.base_url,
            settings.telna.api_key.get_secret_value(),
            timeout=settings.carrier_timeout_seconds,
            rate_limit_per_second=settings.telna.rate_limit_per_second,
            in_doubt_seconds=settings.telna.in_doubt_seconds,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_products(self) -> list[CarrierProduct]:
        templates = await self._all("/pcr/package-templates", "package_templates", {})
        return [self._read(_product, t, False) for t in templates]

    async def order(
        self,
        iccid: str,
        carrier_product_id: str,
        reference: str,
        start_at: datetime | None = None,
    ) -> CarrierLine:
        # Telna cannot book a start time; an AUTO package activates on attach, i.e. as
        # soon as the SIM has no active package: when the current one ends.
        body = {
            "sim": iccid,
            "package_template": carrier_product_id,
            "customer_ref": reference,
            "activation_type": "AUTO" if start_at is not None else "MANUAL",
        }
        return self._read(_line, await self._request("POST", "/pcr/packages", json=body), True)

    async def activate(self, line_id: str) -> CarrierLine:
        data = await self._request("POST", f"/pcr/packages/{line_id}/activate")
        return self._read(_line, data, True)

    async def deactivate(self, line_id: str) -> CarrierLine:
        data = await self._request("POST", f"/pcr/packages/{line_id}/terminate")
        return self._read(_line, data, True)

    async def get_line(self, line_id: str) -> CarrierLine:
        return self._read(_line, await self._request("GET", f"/pcr/packages/{line_id}"), False)

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        packages = await self._all("/pcr/packages", "packages", {"sim": iccid})
        return [self._read(_line, p, False) for p in packages]

    async def usage(self, line_id: str) -> LineUsage:
        return self._read(_usage, await self._request("GET", f"/usage/packages/{line_id}"), False)

    async def _all(self, path: str, key: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """Every item of a paged list, following ``count``/``offset`` to the end."""
        items: list[dict[str, Any]] = []
        while True:
            query = {**params, "count": str(self.page_size), "offset": str(len(items))}
            page = await self._request("GET", path, params=query)
            batch, total = page.get(key), page.get("total")
            if not isinstance(batch, list) or not isinstance(total, int):
                raise CarrierUnavailable(self.name, f"GET {path}: page without {key!r}/total")
            items.extend(batch)
            if not batch or len(items) >= total:
                return items

    def _read(self, convert: Callable[[dict[str, Any]], T], data: Any, changes_state: bool) -> T:
        """Converts an answer; one we cannot read counts as no answer at all."""
        try:
            return convert(data)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise self._lost(changes_state, f"unexpected answer: {exc!r}") from exc

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: dict[str, Any] | None = None,
        params: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        changes_state = method != "GET"
        headers = {"Request-ID": str(uuid.uuid4())}
        try:
            response = await self._client.request(
                method, path, json=json, params=params, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise CarrierUnavailable(self.name, f"{method} {path}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise self._lost(changes_state, f"{method} {path}: {exc!r}") from exc

        status = response.status_code
        if status in _TRANSIENT_STATUSES:
            raise CarrierUnavailable(
                self.name,
                f"{method} {path}: HTTP {status}",
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )
        if status >= 500:
            raise self._lost(changes_state, f"{method} {path}: HTTP {status}")
        if status >= 400:
            raise CarrierRejected(self.name, _message(response), code=str(status))
        try:
            data = response.json()
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise self._lost(changes_state, f"{method} {path}: unreadable body")
        return data

    def _lost(
        self, changes_state: bool, message: str
    ) -> CarrierUnavailable | CarrierOutcomeUnknown:
        if changes_state:
            return CarrierOutcomeUnknown(self.name, message)
        return CarrierUnavailable(self.name, message)


def _message(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), str):
        return str(data["error"])
    return response.text[:200] or f"HTTP {response.status_code}"


def _time(ms: int | float | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def _usage(u: dict[str, Any]) -> LineUsage:
    return LineUsage(
        line_id=str(u["package_id"]),
        used_bytes=int(u["data_usage"]),
        allowance_bytes=int(u["data_usage_allowance"]),
        observed_at=_time(u["timestamp"]),
    )


def _line(p: dict[str, Any]) -> CarrierLine:
    return CarrierLine(
        line_id=str(p["id"]),
        iccid=str(p["sim"]),
        carrier_product_id=str(p["package_template"]),
        reference=p.get("customer_ref"),
        status=_STATUS[p["status"]],
        ordered_at=_time(p["created_date"]),
        activated_at=_time(p.get("activated_date")),
        ends_at=_time(p.get("expiry_date")),
        ended_at=_time(p.get("terminated_date")),
        allowance_bytes=int(p["data_usage_allowance"]),
        used_bytes=int(p.get("data_usage") or 0),
    )


def _product(t: dict[str, Any]) -> CarrierProduct:
    allowance = t["time_allowance"]
    return CarrierProduct(
        carrier_product_id=str(t["id"]),
        name=str(t.get("name") or t["id"]),
        allowance_bytes=int(t["data_usage_allowance"]),
        validity_seconds=int(allowance["duration"]) * _UNIT_SECONDS[allowance["unit"]],
        reset=t.get("reset") or "rolling",
        reset_utc_offset_minutes=int(t.get("reset_utc_offset_minutes") or 0),
        throttle_kbps=int((t.get("traffic_policy") or {}).get("throttle_kbps") or 0),
        price_cents=int(t.get("price_cents") or 0),
    )
