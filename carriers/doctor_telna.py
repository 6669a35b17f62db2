"""The carrier doctor's checks of the Telna client: its [NOT PUBLIC] choices
(:data:`carriers.telna.NOT_PUBLIC`) and its readings of the record
(:data:`carriers.telna.RECORD_READINGS`), each one or two reads or a harmless probe.

The activate and terminate probes POST, without a body, to the path for a package id no
carrier has issued (``doctor-<uuid4>``): there is nothing to start or end, so nothing
changes. A route that exists looks the package up and refuses it naming it (404, 400,
409 or 422 with a message naming a package or the id); a route that does not exist
answers 404 or 405 naming none (the request path is taken out of the message first, as
some servers echo it). So a carrier whose 404s name nothing reads as having no such
route: the line shows the message to judge by. A refused key, a 5xx, a success or any
other answer does not tell, and the line says ``not checked``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx

from carriers.telna import (
    MS_ABOVE,
    NOT_PUBLIC,
    STATUS,
    UNIT_SECONDS,
    AuthScheme,
    authorization,
    error_message,
    http_client,
    parse_time,
)
from carriers.verdicts import (
    CannotCheck,
    NotChecked,
    Verdict,
    confirmed,
    contradicted,
    not_checked,
    price_fields,
    run_checks,
)
from config import Settings

TEMPLATES = "/pcr/package-templates"
TEMPLATE_PAGE = 100
PACKAGE_PAGE = 5
# A pass smaller than this is no data pass in bytes: the figure is in another unit.
MIN_PASS_BYTES = 100_000
PACKAGE_TIMES = ("created_date", "activated_date", "expiry_date", "terminated_date")
SCHEMES: dict[AuthScheme, str] = {"raw": "raw key", "bearer": "Bearer key"}
_LOOKED_UP = {400, 404, 409, 422}
_NO_ROUTE = {404, 405}


class TelnaAccount:
    """The configured Telna account, reached with the client's own HTTP settings; each
    read is made once per run and shared by the checks that need it."""

    def __init__(
        self,
        settings: Settings,
        iccid: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        telna = settings.telna
        self.base_url, self.scheme, self.iccid = telna.base_url, telna.auth_scheme, iccid
        self.currency = telna.currency
        self.first_page: Any = None
        self._key = telna.api_key.get_secret_value()
        if not self._key:
            raise CannotCheck("TELNA__API_KEY is not set")
        timeout = settings.carrier_timeout_seconds
        self._client = http_client(telna.base_url, self._key, self.scheme, timeout, transport)
        self._reads: dict[str, Any] = {}

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self, method: str, path: str, params: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = {"Request-ID": str(uuid.uuid4())}
        headers["Authorization"] = authorization(self._key, self.scheme)
        try:
            return await self._client.request(method, path, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise CannotCheck(f"telna at {self.base_url} does not answer: {exc!r}") from exc

    async def read(self, path: str, params: dict[str, str]) -> dict[str, Any]:
        """A GET's JSON object, read once per run."""
        key = f"{path}?{sorted(params.items())}"
        if key not in self._reads:
            response = await self.request("GET", path, params)
            if not response.is_success:
                raise NotChecked(
                    f"GET {path}: HTTP {response.status_code} {error_message(response)}"
                )
            self._reads[key] = _json(response)
        data = self._reads[key]
        if not isinstance(data, dict):
            raise NotChecked(f"GET {path}: the answer is no JSON object")
        return data


async def diagnose(
    settings: Settings, iccid: str | None, transport: httpx.AsyncBaseTransport | None = None
) -> list[tuple[str, Verdict]]:
    account = TelnaAccount(settings, iccid, transport)
    try:
        return await run_checks(account, CHECKS)
    finally:
        await account.aclose()


# -- NOT_PUBLIC -----------------------------------------------------------------------


async def auth_scheme(account: TelnaAccount) -> Verdict:
    """The configured scheme is accepted on a one-template read; if it is refused and the
    other one is not, the other checks go on with the other one."""
    configured = account.scheme
    response = await _first_page(account)
    if response.is_success:
        return confirmed(f"{SCHEMES[configured]} accepted: GET {TEMPLATES} answered HTTP 200")
    if response.status_code not in (401, 403):
        raise CannotCheck(
            f"telna at {account.base_url} answers GET {TEMPLATES} with HTTP "
            f"{response.status_code} {error_message(response)} (check TELNA__BASE_URL)"
        )
    refusal = f"HTTP {response.status_code} {error_message(response)}"
    account.scheme = "bearer" if configured == "raw" else "raw"
    if not (await _first_page(account)).is_success:
        raise CannotCheck(
            f"telna refuses the API key raw and as Bearer ({refusal}): check TELNA__API_KEY"
        )
    return contradicted(
        f"{SCHEMES[configured]} refused ({refusal}), {SCHEMES[account.scheme]} accepted: "
        f"set TELNA__AUTH_SCHEME={account.scheme} (the checks below use it)"
    )


async def activate(account: TelnaAccount) -> Verdict:
    return await _probe_route(account, NOT_PUBLIC.activate)


async def terminate(account: TelnaAccount) -> Verdict:
    return await _probe_route(account, NOT_PUBLIC.terminate)


# -- RECORD_READINGS ------------------------------------------------------------------


async def paging(account: TelnaAccount) -> Verdict:
    page = account.first_page
    seen = f"GET {TEMPLATES}?count=1&offset=0"
    if not isinstance(page, dict):
        return contradicted(f"{seen}: the answer is no JSON object")
    problems = [
        f"{key} is {page.get(key)!r}"
        for key in ("total", "offset", "count")
        if not _is_int(page.get(key))
    ]
    items: Any = page.get("package_templates")
    if not isinstance(items, list):
        problems.append("no package_templates list")
    elif len(items) > 1:
        problems.append(f"count=1 gave {len(items)} items")
    if problems:
        return contradicted(f"{seen}: " + ", ".join(problems))
    shape = ", ".join(f"{key}: {page[key]}" for key in ("total", "offset", "count"))
    return confirmed(f"{seen} answered {{{shape}, package_templates: [{len(items)}]}}")


async def template_allowance_bytes(account: TelnaAccount) -> Verdict:
    templates = await _templates(account)
    values: dict[str, Any] = {str(t.get("id")): t.get("data_usage_allowance") for t in templates}
    wrong = [f"{i}: {v!r}" for i, v in values.items() if not _is_int(v) or v < 0]
    if wrong:
        return contradicted(
            f"no integer of bytes on {len(wrong)} of {len(values)} templates, e.g. {wrong[0]}"
        )
    small = [f"{i}: {v} B" for i, v in values.items() if 0 < v < MIN_PASS_BYTES]
    if small:
        return contradicted(f"too small for bytes on {len(small)} templates, e.g. {small[0]}")
    sizes = sorted(v for v in values.values() if v > 0)
    if not sizes:
        return confirmed(f"integers on {len(values)} templates, none with data")
    return confirmed(
        f"integers on {_count(templates)} templates, "
        f"{sizes[0]} to {sizes[-1]} B ({_size(sizes[0])} to {_size(sizes[-1])})"
    )


async def template_time_unit(account: TelnaAccount) -> Verdict:
    templates = await _templates(account)
    units: Counter[str] = Counter()
    wrong = []
    for t in templates:
        allowance = t.get("time_allowance")
        if (
            isinstance(allowance, dict)
            and _is_int(allowance.get("duration"))
            and allowance.get("unit") in UNIT_SECONDS
        ):
            units[str(allowance["unit"])] += 1
        else:
            wrong.append(f"{t.get('id')}: {allowance!r}")
    if wrong:
        return contradicted(
            f"{len(wrong)} of {len(templates)} templates unreadable, e.g. {wrong[0]}"
        )
    return confirmed(f"{{duration, unit}} on {_count(templates)} templates, units {_tally(units)}")


async def template_activation_type(account: TelnaAccount) -> Verdict:
    templates = await _templates(account)
    kinds = Counter(str(t.get("activation_type")) for t in templates)
    wrong = {k: n for k, n in kinds.items() if k not in ("AUTO", "MANUAL")}
    if wrong:
        return contradicted(
            f"activation_type {_tally(Counter(wrong))} on {_count(templates)} templates"
        )
    return confirmed(f"{_tally(kinds)} on {_count(templates)} templates")


async def package_times(account: TelnaAccount) -> Verdict:
    packages = await _packages(account)
    forms: Counter[str] = Counter()
    wrong = []
    for p in packages:
        for field in PACKAGE_TIMES:
            value = p.get(field)
            try:
                moment = parse_time(value)
            except (TypeError, ValueError):
                wrong.append(f"package {p.get('id')} {field} {value!r}")
                continue
            if moment is None:
                if field == "created_date":
                    wrong.append(f"package {p.get('id')} without created_date")
            elif not 2000 <= moment.year < 2100:
                wrong.append(f"package {p.get('id')} {field} {value!r} reads as {moment:%Y-%m-%d}")
            else:
                forms[_time_form(value)] += 1
    if wrong:
        return contradicted(f"{len(wrong)} unreadable, e.g. {wrong[0]}")
    return confirmed(
        f"{sum(forms.values())} times on {_of(account, packages)} read, as {_tally(forms)}"
    )


async def package_status(account: TelnaAccount) -> Verdict:
    packages = await _packages(account)
    statuses = Counter(str(p.get("status")) for p in packages)
    wrong = {s: n for s, n in statuses.items() if s not in STATUS}
    if wrong:
        return contradicted(f"unknown status {_tally(Counter(wrong))} on {account.iccid}")
    return confirmed(f"{_tally(statuses)} on {_of(account, packages)}")


async def package_usage_bytes(account: TelnaAccount) -> Verdict:
    packages = await _packages(account)
    values: dict[str, Any] = {str(p.get("id")): p.get("data_usage_remaining") for p in packages}
    wrong = [f"package {i}: {v!r}" for i, v in values.items() if not _is_int(v) or v < 0]
    if wrong:
        return contradicted(f"data_usage_remaining is no integer of bytes: {wrong[0]}")
    return confirmed(
        f"integers on {_of(account, packages)}, "
        f"{min(values.values())} to {max(values.values())} B left"
    )


async def currency(account: TelnaAccount) -> Verdict:
    """The record shows no price nor currency on a template: the configured currency is
    the operator's word, unless a template names one (then the two must agree)."""
    named = {str(t["currency"]) for t in await _templates(account) if t.get("currency")}
    if not named:
        raise NotChecked(
            f"no template names a currency: TELNA__CURRENCY={account.currency} is taken on"
            " the operator's word"
        )
    if named != {account.currency}:
        return contradicted(f"templates name {sorted(named)}, TELNA__CURRENCY={account.currency}")
    return confirmed(f"templates name {account.currency}")


async def package_price(account: TelnaAccount) -> Verdict:
    """The eSIM's packages show no price (a line's is the catalogue's when ordered)."""
    packages = await _packages(account)
    shown = [f"package {p.get('id')}: {price_fields(p)}" for p in packages if price_fields(p)]
    if shown:
        return contradicted(f"packages show what may be a price, unread by the audit: {shown[0]}")
    return confirmed(f"{_of(account, packages)}, none showing a price")


CHECKS = (
    auth_scheme,
    paging,
    template_allowance_bytes,
    template_time_unit,
    template_activation_type,
    activate,
    terminate,
    currency,
    package_times,
    package_status,
    package_usage_bytes,
    package_price,
)


# -- helpers --------------------------------------------------------------------------


async def _first_page(account: TelnaAccount) -> httpx.Response:
    """One template, with the account's current scheme: the first request of a run."""
    response = await account.request("GET", TEMPLATES, {"count": "1", "offset": "0"})
    if response.is_success:
        account.first_page = _json(response)
    return response


async def _templates(account: TelnaAccount) -> list[dict[str, Any]]:
    page = await account.read(TEMPLATES, {"count": str(TEMPLATE_PAGE), "offset": "0"})
    items = page.get("package_templates")
    if not isinstance(items, list):
        raise NotChecked(f"GET {TEMPLATES}: no package_templates list (see paging)")
    templates = [t for t in items if isinstance(t, dict)]
    if not templates:
        raise NotChecked("no package template on the account")
    return templates


async def _packages(account: TelnaAccount) -> list[dict[str, Any]]:
    if account.iccid is None:
        raise NotChecked("needs --iccid")
    query = {"sim": account.iccid, "count": str(PACKAGE_PAGE), "offset": "0"}
    page = await account.read("/pcr/packages", query)
    items = page.get("packages")
    if not isinstance(items, list):
        raise NotChecked(f"GET /pcr/packages?sim={account.iccid}: no packages list")
    packages = [p for p in items if isinstance(p, dict)]
    if not packages:
        raise NotChecked(f"no package on {account.iccid}")
    return packages


async def _probe_route(account: TelnaAccount, template: str) -> Verdict:
    probe = f"doctor-{uuid.uuid4()}"
    path = template.format(id=probe)
    response = await account.request("POST", path)
    status, message = response.status_code, error_message(response)
    seen = f"POST {template} for no such package: HTTP {status} {message!r}"
    if status in _LOOKED_UP and _names_package(message, path, probe):
        return confirmed(f"{seen}: the route looked the package up")
    if status in _NO_ROUTE:
        return contradicted(f"{seen} names no package: no such route")
    return not_checked(f"{seen} does not tell a route from none")


def _names_package(message: str, path: str, probe: str) -> bool:
    text = message.replace(f"/v2.1{path}", "").replace(path, "")
    return probe in text or "package" in text.lower()


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _time_form(value: Any) -> str:
    if isinstance(value, str) and not value.strip().isdigit():
        return "ISO 8601"
    return "epoch ms" if float(value) > MS_ABOVE else "epoch s"


def _tally(counts: Counter[str]) -> str:
    return ", ".join(f"{key} ×{n}" for key, n in sorted(counts.items()))


def _count(templates: list[dict[str, Any]]) -> str:
    return str(len(templates)) if len(templates) < TEMPLATE_PAGE else f"the first {TEMPLATE_PAGE}"


def _of(account: TelnaAccount, packages: list[dict[str, Any]]) -> str:
    n = len(packages)
    return f"{n} package{'s' if n != 1 else ''} of {account.iccid}"


def _size(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n} B"
