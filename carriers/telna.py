"""The Telna client: Telna Connect PCR v2.1 REST/JSON over one long-lived httpx client.

Spoken as CARRIERS.md section 2 records it: packages are created from package templates
(``POST /pcr/packages {sim, package_template}``), read one by one or listed with the
``sim``/``package_template``/``status`` filters and ``count``/``offset`` paging; usage is
read off the package (``data_usage_remaining``, bytes) against its template's
``data_usage_allowance``. Statuses: NOT_ACTIVE → ``scheduled``, ACTIVE → ``active``,
TERMINATED → ``ended``; SUSPENDED → ``ended`` too (it serves nothing; should it be
resumed, the audit sees a line active that we ended). Times are accepted as epoch
seconds, epoch milliseconds or ISO 8601 (0: not yet). Requests carry a fresh uuid4
``Request-ID``.

Where the record is silent ([NOT PUBLIC]) the choices are made once, in
:data:`NOT_PUBLIC` below, and the carrier doctor checks them against an account.

Error mapping (reads are GETs and safe to repeat; POSTs change state):

- connection refused, connect/pool timeout (nothing was sent) → ``CarrierUnavailable``
- 429 and 503 → ``CarrierUnavailable`` with ``retry_after`` from ``Retry-After``
- read/write timeout, dropped connection (``RemoteProtocolError``, ``ReadError``...),
  502, 504 and other 5xx → ``CarrierOutcomeUnknown`` on POST, ``CarrierUnavailable``
  on GET
- other 4xx → ``CarrierRejected`` with Telna's ``error`` (or ``message``) and the status
- a 2xx body that is not the expected JSON, or a package whose template has no data
  allowance → as a dropped connection (the request may have taken effect but its answer
  is unusable)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

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

logger = logging.getLogger(__name__)

AuthScheme = Literal["raw", "bearer"]


@dataclass(frozen=True)
class NotPublic:
    """The choices this client makes where Telna's public record is silent; each is
    named here once, documented, and checked by ``python -m carriers.doctor telna``."""

    activate: str = "/pcr/packages/{id}/activate"
    """POST that starts a NOT_ACTIVE package (a Telna reseller's path under Telna's
    prefix; Telna's own call is not public). Its answer is not relied on: the package is
    read back."""
    terminate: str = "/pcr/packages/{id}/terminate"
    """POST that ends a package (same origin as ``activate``)."""
    auth_scheme: AuthScheme = "raw"
    """``Authorization`` holds the raw key, or ``Bearer <key>``: third parties disagree
    (``TELNA__AUTH_SCHEME``)."""
    currency: str = "USD"
    """The currency of a template's price: the record shows no price or currency on a
    template, so the account's is the operator's word (``TELNA__CURRENCY``), stored on
    every product and on every line bought."""
    package_price: str = "a package shows no price"
    """What Telna charged for a package: the record's package fields (CARRIERS.md 2.3)
    show no price or currency, nor does any other read of it. A line's price is the
    catalogue's when it was ordered; the audit finds a Telna line with no recorded price
    (``unpriced_purchase``, flagged) but compares no amount (``price_mismatch`` needs a
    price the package shows). The doctor confirms the packages show none."""


NOT_PUBLIC = NotPublic()

# How this client reads the record where it does speak (module docstring), by name: what
# ``python -m carriers.doctor telna`` checks besides NOT_PUBLIC.
RECORD_READINGS = {
    "paging": "lists page with count/offset and answer {total, offset, count, <items>}",
    "template_allowance_bytes": "a template's data_usage_allowance is an integer of bytes",
    "template_time_unit": "a template's time_allowance is {duration, unit}, unit SECOND..YEAR",
    "template_activation_type": "a template's activation_type is AUTO or MANUAL",
    "package_times": "package times are epoch seconds, epoch ms or ISO 8601 (0: not yet)",
    "package_status": "package statuses are NOT_ACTIVE, ACTIVE, TERMINATED or SUSPENDED",
    "package_usage_bytes": "a package's data_usage_remaining is an integer of bytes",
}

STATUS: dict[str, LineStatus] = {
    "NOT_ACTIVE": "scheduled",
    "ACTIVE": "active",
    "TERMINATED": "ended",
    "SUSPENDED": "ended",
}
# Template durations; the calendar units vary, and a line's end is the carrier's
# expiry_date: these only plan (the longest month for CALENDAR_MONTH).
UNIT_SECONDS = {
    "SECOND": 1,
    "MINUTE": 60,
    "HOUR": 3600,
    "DAY": 86_400,
    "WEEK": 604_800,
    "MONTH": 30 * 86_400,
    "CALENDAR_MONTH": 31 * 86_400,
    "YEAR": 365 * 86_400,
}
_TRANSIENT_STATUSES = {429, 503}
# Epoch numbers above this are milliseconds (it is 5138 AD in seconds, 1973 in ms).
MS_ABOVE = 100_000_000_000
OPEN_STATUSES = ("NOT_ACTIVE", "ACTIVE")  # a package that has not ended

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
        auth_scheme: AuthScheme = NOT_PUBLIC.auth_scheme,
        currency: str = NOT_PUBLIC.currency,
    ) -> None:
        self.page_size = page_size
        self.in_doubt_seconds = in_doubt_seconds
        self.choices = NotPublic(auth_scheme=auth_scheme, currency=currency)
        # Templates by id: a package's allowance is its template's (read once each).
        self._templates: dict[str, dict[str, Any]] = {}
        transport = limited(transport, rate_limit_per_second)
        self._client = http_client(base_url, api_key, auth_scheme, timeout, transport)

    @classmethod
    def from_settings(cls, settings: Settings) -> TelnaCarrier:
        return cls(
            settings.telna.base_url,
            settings.telna.api_key.get_secret_value(),
            timeout=settings.carrier_timeout_seconds,
            rate_limit_per_second=settings.telna.rate_limit_per_second,
            in_doubt_seconds=settings.telna.in_doubt_seconds,
            auth_scheme=settings.telna.auth_scheme,
            currency=settings.telna.currency,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_products(self) -> list[CarrierProduct]:
        """Every template this client can read (one it cannot is logged and left out)."""
        templates = await self._all("/pcr/package-templates", "package_templates", {})
        products = []
        for t in templates:
            self._templates[str(t.get("id"))] = t
            try:
                products.append(_product(t, self.choices.currency))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("Telna template %s is no pass we can rotate: %r", t.get("id"), exc)
        return products

    async def order(
        self,
        iccid: str,
        carrier_product_id: str,
        reference: str,
        start_at: datetime | None = None,
    ) -> CarrierLine:
        # A package starts as its template says (AUTO: on attach, when the SIM has no
        # active package; MANUAL: through the API): Telna takes no start time. Nor has a
        # package a field for our reference: an order is recognised by its SIM, template
        # and creation time (activities/carrier.py, ``ours``).
        body = {"sim": iccid, "package_template": _template_ref(carrier_product_id)}
        return await self._line(await self._request("POST", "/pcr/packages", json=body), True)

    async def activate(self, line_id: str) -> CarrierLine:
        await self._request("POST", self.choices.activate.format(id=line_id))
        return await self.get_line(line_id)

    async def deactivate(self, line_id: str) -> CarrierLine:
        await self._request("POST", self.choices.terminate.format(id=line_id))
        return await self.get_line(line_id)

    async def get_line(self, line_id: str) -> CarrierLine:
        return await self._line(await self._request("GET", f"/pcr/packages/{line_id}"), False)

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        packages = await self._all("/pcr/packages", "packages", {"sim": iccid})
        return [await self._line(p, False) for p in packages]

    async def open_lines(self, iccid: str, carrier_product_id: str) -> list[CarrierLine]:
        """The template's packages on the SIM that have not ended: one filtered read per
        open status, as long for an eSIM of a year as for one of a day."""
        lines = []
        for status in OPEN_STATUSES:
            query = {"sim": iccid, "package_template": carrier_product_id, "status": status}
            for p in await self._all("/pcr/packages", "packages", query):
                lines.append(await self._line(p, False))
        return lines

    async def usage(self, line_id: str) -> LineUsage:
        line = await self.get_line(line_id)
        return LineUsage(
            line_id=line.line_id,
            used_bytes=line.used_bytes,
            allowance_bytes=line.allowance_bytes,
            observed_at=datetime.now(UTC),
            iccid=line.iccid,
        )

    async def _template(self, template_id: str, changes_state: bool) -> dict[str, Any]:
        """A package template, read once per process."""
        if template_id not in self._templates:
            path = f"/pcr/package-templates/{template_id}"
            try:
                self._templates[template_id] = await self._request("GET", path)
            except (CarrierUnavailable, CarrierRejected) as exc:
                if changes_state:  # the package was made: only its answer is unusable
                    raise self._lost(True, f"GET {path}: {exc}") from exc
                raise
        return self._templates[template_id]

    async def _line(self, p: dict[str, Any], changes_state: bool) -> CarrierLine:
        """A package as a line; one we cannot read counts as no answer at all."""
        try:
            template = p["package_template"]
            template_id = str(template["id"] if isinstance(template, dict) else template)
        except (KeyError, TypeError) as exc:
            raise self._lost(changes_state, f"unexpected answer: {exc!r}") from exc
        t = template if isinstance(template, dict) else None
        if t is None or "data_usage_allowance" not in t:
            t = await self._template(template_id, changes_state)
        return self._read(lambda p: _line(p, template_id, t), p, changes_state)

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
        """The JSON object answered (``{}`` for a bare ``true``)."""
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
            raise CarrierRejected(self.name, error_message(response), code=str(status))
        try:
            data = response.json()
        except ValueError:
            data = None
        if data is True and changes_state:
            return {}
        if not isinstance(data, dict):
            raise self._lost(changes_state, f"{method} {path}: unreadable body")
        return data

    def _lost(
        self, changes_state: bool, message: str
    ) -> CarrierUnavailable | CarrierOutcomeUnknown:
        if changes_state:
            return CarrierOutcomeUnknown(self.name, message)
        return CarrierUnavailable(self.name, message)


def http_client(
    base_url: str,
    api_key: str,
    auth_scheme: AuthScheme,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The client's HTTP settings (PCR v2.1 under ``base_url``), for it and its doctor."""
    key = authorization(api_key, auth_scheme)
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/") + "/v2.1",
        headers={"Authorization": key, "Accept": "application/json"},
        timeout=timeout,
        transport=transport,
    )


def authorization(api_key: str, auth_scheme: AuthScheme) -> str:
    """The ``Authorization`` value for ``auth_scheme``."""
    return f"Bearer {api_key}" if auth_scheme == "bearer" else api_key


def error_message(response: httpx.Response) -> str:
    """Telna's ``error`` (or ``message``) of a refusal, else the start of its body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        for key in ("error", "message"):
            if isinstance(data.get(key), str):
                return str(data[key])
    return response.text[:200] or f"HTTP {response.status_code}"


def _template_ref(template_id: str) -> int | str:
    """A template id as Telna shows it: an integer (a name where an account has them)."""
    return int(template_id) if template_id.isdigit() else template_id


def parse_time(value: Any) -> datetime | None:
    """A Telna time: epoch seconds or milliseconds (number or digits) or ISO 8601; 0,
    empty or null for "not yet"."""
    if value is None or value == "" or value == 0:
        return None
    if isinstance(value, str) and not value.strip().isdigit():
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise TypeError(f"not a time: {value!r}")
    number = float(value)
    if number == 0:
        return None
    return datetime.fromtimestamp(number / 1000 if number > MS_ABOVE else number, UTC)


def _seconds(allowance: dict[str, Any]) -> int:
    return int(allowance["duration"]) * UNIT_SECONDS[str(allowance["unit"])]


def _line(p: dict[str, Any], template_id: str, template: dict[str, Any]) -> CarrierLine:
    allowance = int(template["data_usage_allowance"])
    remaining = p.get("data_usage_remaining")
    used = allowance - int(remaining) if remaining is not None else 0
    ordered_at = parse_time(p["created_date"])
    if ordered_at is None:
        raise ValueError("package without created_date")
    return CarrierLine(
        line_id=str(p["id"]),
        iccid=str(p["sim"]),
        carrier_product_id=template_id,
        reference=None,  # a package has no field for it
        status=STATUS[p["status"]],
        ordered_at=ordered_at,
        activated_at=parse_time(p.get("activated_date")),
        ends_at=parse_time(p.get("expiry_date")),
        ended_at=parse_time(p.get("terminated_date")),
        allowance_bytes=allowance,
        used_bytes=max(0, used),
    )


def _product(t: dict[str, Any], currency: str) -> CarrierProduct:
    # A template without a data allowance (null: unlimited, or voice/SMS only) is read as
    # 0 bytes: the catalogue sync leaves such a product out, and counts it.
    allowance = int(t.get("data_usage_allowance") or 0)
    return CarrierProduct(
        carrier_product_id=str(t["id"]),
        name=str(t.get("name") or t["id"]),
        allowance_bytes=allowance,
        validity_seconds=_seconds(t["time_allowance"]),
        reset=t.get("reset") or "rolling",
        reset_utc_offset_minutes=int(t.get("reset_utc_offset_minutes") or 0),
        throttle_kbps=int(t.get("throttle_kbps") or 0),
        price_cents=int(t.get("price_cents") or 0),
        currency=currency,
        # AUTO: the package starts on attach, i.e. when the SIM has no active package.
        rotation="queued" if t.get("activation_type") == "AUTO" else "activated",
    )
