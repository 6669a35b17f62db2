"""The carrier doctor's checks of the eSIM Go client: how it speaks API v2.4 and what it
chose where the record is silent (:data:`carriers.esimgo.WIRE`), one check per field.

Only reads and harmless probes are sent: the catalogue's first page, a request with a
made-up key, and with ``--iccid`` that eSIM's bundles, the latest assignment of one of
them, an order of ``type: validate`` (which eSIM Go checks without charging, record 3.3)
and a revoke of ``type: validate`` for an assignment id no carrier has issued. Nothing is
bought, assigned or revoked. What a real revoke of an active assignment does, and how
eSIM Go signs callbacks, cannot be read: those lines say ``not checked`` or say so.
"""

from __future__ import annotations

import re
import uuid
from collections import Counter
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx

from carriers.esimgo import WIRE, error_message, http_client
from carriers.esimgo_pacing import PacedTransport, RateWindow, WindowPacer
from carriers.esimgo_records import (
    DAY_SECONDS,
    MB,
    STARTED_STATES,
    LineName,
    assignments,
    latest,
    parse_time,
    unlimited,
    whole,
)
from carriers.ratelimit import limited
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

CATALOGUE_PAGE = 100
TRIES = 3  # of a request answered 429
# A daily pass smaller than this is no figure in bytes: it is in another unit.
MIN_PASS_BYTES = 100_000
# A pass of a terabyte or more is no figure in MB: it is in bytes or kB.
MAX_PASS_MB = 1_000_000
# A bundle name saying its data: esim_1GB_7D_GB_V2, esim_500MB_1D_…
NAMED_AMOUNT = re.compile(r"(?:^|_)(\d+(?:\.\d+)?)(GB|MB)(?:_|$)")
TIMES = ("assignmentDateTime", "startTime", "endTime")
ASSIGNMENT_FIELDS = ("id", "initialQuantity", "remainingQuantity", "assignmentDateTime")
_READ_ERRORS = (KeyError, TypeError, ValueError, AttributeError)


class EsimGoAccount:
    """The configured eSIM Go account, reached with the client's own HTTP settings; each
    read is made once per run, and every answer's rate-limit headers are kept."""

    def __init__(
        self,
        settings: Settings,
        iccid: str | None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        esimgo = settings.esimgo
        self.base_url, self.iccid = esimgo.base_url, iccid
        key = esimgo.api_key.get_secret_value()
        if not key:
            raise CannotCheck("ESIMGO__API_KEY is not set")
        # Paced as the client is: a doctor that spends the window reads 429s, not answers.
        paced = PacedTransport(limited(transport, esimgo.rate_limit_per_second), WindowPacer())
        self._client = http_client(esimgo.base_url, key, settings.carrier_timeout_seconds, paced)
        self._reads: dict[str, Any] = {}
        self._validated: tuple[httpx.Response, str] | None = None
        self.currency = esimgo.currency
        self.windows: list[tuple[str, RateWindow]] = []

    async def aclose(self) -> None:
        await self._client.aclose()

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, str] | None = None,
        json: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        for _ in range(TRIES):
            try:
                response = await self._client.request(
                    method, path, params=params, json=json, headers=headers
                )
            except httpx.TransportError as exc:
                raise CannotCheck(f"esimgo at {self.base_url} does not answer: {exc!r}") from exc
            self.windows.append((f"{method} {_shape(path)}", RateWindow.of(response.headers)))
            if response.status_code != 429:  # else the pacer holds the next for Retry-After
                break
        return response

    async def read(self, path: str, params: dict[str, str] | None = None) -> Any:
        """A GET's JSON, read once per run."""
        key = f"{path}?{sorted((params or {}).items())}"
        if key not in self._reads:
            response = await self.request("GET", path, params)
            if not response.is_success:
                raise NotChecked(
                    f"GET {path}: HTTP {response.status_code} {error_message(response)}"
                )
            try:
                self._reads[key] = response.json()
            except ValueError:
                self._reads[key] = None
        return self._reads[key]

    async def catalogue(self) -> list[dict[str, Any]]:
        page = await self.read("/catalogue", {"page": "1", "perPage": str(CATALOGUE_PAGE)})
        items = page.get("bundles") if isinstance(page, dict) else None
        if not isinstance(items, list):
            raise NotChecked("GET /catalogue: no bundles list (see catalogue)")
        bundles = [b for b in items if isinstance(b, dict)]
        if not bundles:
            raise NotChecked("no bundle in the catalogue")
        return bundles

    async def catalogue_by_name(self) -> dict[str, dict[str, Any]]:
        try:
            return {str(b.get("name")): b for b in await self.catalogue()}
        except NotChecked:
            return {}

    async def validated_order(self) -> tuple[httpx.Response, str]:
        """An order of ``type: validate`` (checked, never charged) in the client's shape,
        of a bundle on the eSIM (else the catalogue's first), made once per run; its
        answer and what was sent, said in a few words."""
        if self.iccid is None:
            raise NotChecked("needs --iccid")
        if self._validated is None:
            try:
                bundle = (await self.assignments())[0][0]
            except NotChecked:
                bundle = str((await self.catalogue())[0]["name"])
            item = {
                "type": "bundle",
                "quantity": 1,
                "item": bundle,
                "iccids": [self.iccid],
                "allowReassign": False,
            }
            body = {"type": "validate", "assign": True, "order": [item]}
            response = await self.request("POST", "/orders", json=body)
            seen = f"POST /orders of type validate for {bundle}: HTTP {response.status_code}"
            self._validated = (response, seen)
        return self._validated

    async def assignments(self) -> list[tuple[str, dict[str, Any]]]:
        """The eSIM's assignments, the used ones too."""
        if self.iccid is None:
            raise NotChecked("needs --iccid")
        path = f"/esims/{quote(self.iccid)}/bundles"
        answer = await self.read(path, {"includeUsed": "true", "limit": "200"})
        try:
            found = assignments(answer)
        except _READ_ERRORS as exc:
            raise NotChecked(f"GET {path}: unreadable ({exc!r}; see assignment_list)") from exc
        if not found:
            raise NotChecked(f"no bundle on {self.iccid}")
        return found


async def diagnose(
    settings: Settings, iccid: str | None, transport: httpx.AsyncBaseTransport | None = None
) -> list[tuple[str, Verdict]]:
    account = EsimGoAccount(settings, iccid, transport)
    try:
        return await run_checks(account, CHECKS)
    finally:
        await account.aclose()


async def auth(account: EsimGoAccount) -> Verdict:
    """The configured key reads the catalogue (else the doctor stops); a made-up key is
    refused with 403 ``{"message": "Forbidden"}``."""
    response = await account.request("GET", "/catalogue", {"page": "1", "perPage": "1"})
    if response.status_code == 403:
        raise CannotCheck(
            f"esimgo refuses ESIMGO__API_KEY (HTTP 403 {error_message(response)}): check it"
        )
    if not response.is_success:
        raise CannotCheck(
            f"esimgo at {account.base_url} answers GET /catalogue with HTTP "
            f"{response.status_code} {error_message(response)} (check ESIMGO__BASE_URL)"
        )
    made_up = {"X-API-Key": f"doctor-{uuid.uuid4()}"}
    refused = await account.request(
        "GET", "/catalogue", {"page": "1", "perPage": "1"}, headers=made_up
    )
    seen = f"a made-up key: HTTP {refused.status_code} {_body(refused)}"
    if refused.status_code == 403 and error_message(refused) == "Forbidden":
        return confirmed(f"X-API-Key accepted; {seen}")
    return contradicted(f"X-API-Key accepted; {seen}, not 403 {{'message': 'Forbidden'}}")


async def catalogue(account: EsimGoAccount) -> Verdict:
    page = await account.read("/catalogue", {"page": "1", "perPage": str(CATALOGUE_PAGE)})
    seen = f"GET /catalogue?page=1&perPage={CATALOGUE_PAGE}"
    if not isinstance(page, dict) or not isinstance(page.get("bundles"), list):
        return contradicted(f"{seen}: no {{bundles: [...]}} object")
    items: list[Any] = page["bundles"]
    wrong = [
        repr(b)[:80]
        for b in items
        if not isinstance(b, dict)
        or not isinstance(b.get("name"), str)
        or not b["name"]
        or "duration" not in b
    ]
    if wrong:
        return contradicted(f"{seen}: {len(wrong)} bundles without name/duration, e.g. {wrong[0]}")
    if len(items) > CATALOGUE_PAGE:
        return contradicted(f"{seen}: {len(items)} bundles on one page")
    pages = page.get("pageCount")
    paging = f", pageCount {pages}" if pages is not None else ", no pageCount"
    return confirmed(f"{seen}: {{bundles: [{len(items)}]{paging}}}")


async def data_amount_units(account: EsimGoAccount) -> Verdict:
    """Bundle names that say their data (``_1GB_``) against ``dataAmount``: decimal MB;
    with ``--iccid``, assignments' ``initialQuantity`` against their bundle's too."""
    bundles = [b for b in await account.catalogue() if not unlimited(b)]
    agree, wrong = 0, []
    for b in bundles:
        amount = b.get("dataAmount")
        if not isinstance(amount, int | float) or isinstance(amount, bool) or amount < 0:
            wrong.append(f"{b.get('name')}: dataAmount {amount!r}")
        elif amount >= MAX_PASS_MB:
            wrong.append(f"{b.get('name')}: dataAmount {amount} is no figure in MB")
        elif (named := _named_mb(str(b.get("name")))) is not None:
            if abs(amount - named) < 0.5:
                agree += 1
            else:
                wrong.append(f"{b['name']}: dataAmount {amount}, its name says {named:g} MB")
    by_name = await account.catalogue_by_name()
    on_esim = 0
    if account.iccid is not None:
        try:
            found = await account.assignments()
        except NotChecked:
            found = []
        for name, a in found:
            offer = by_name.get(name)
            if offer is None or unlimited(offer) or unlimited(a):
                continue
            try:
                mb, initial = float(offer["dataAmount"]), whole(a["initialQuantity"])
            except _READ_ERRORS:
                continue
            if initial == round(mb * MB):
                on_esim += 1
            else:
                wrong.append(f"{name}: {mb:g} MB in the catalogue, {initial} B assigned")
    if wrong:
        return contradicted(f"{len(wrong)} disagree, e.g. {wrong[0]}")
    if not agree and not on_esim:
        raise NotChecked("no bundle name or assignment tells the unit")
    told = [f"{agree} bundle names"] if agree else []
    told += [f"{on_esim} assignments of {account.iccid}"] if on_esim else []
    return confirmed(f"MB of 10^6 bytes, as {' and '.join(told)} say")


async def bundle_duration(account: EsimGoAccount) -> Verdict:
    bundles = await account.catalogue()
    wrong, compressed = [], 0
    for b in bundles:
        try:
            if whole(b.get("duration")) <= 0:
                raise ValueError("not positive")
            if b.get("durationSeconds") is not None:
                compressed += 1
                if whole(b["durationSeconds"]) <= 0:
                    raise ValueError("durationSeconds not positive")
        except (TypeError, ValueError) as exc:
            wrong.append(f"{b.get('name')}: duration {b.get('duration')!r} ({exc})")
    if wrong:
        return contradicted(f"{len(wrong)} of {len(bundles)} unreadable, e.g. {wrong[0]}")
    days = Counter(str(b["duration"]) for b in bundles)
    extra = f"; {compressed} with durationSeconds (a simulator's)" if compressed else ""
    return confirmed(f"whole days on {len(bundles)} bundles: {_tally(days)}{extra}")


async def price(account: EsimGoAccount) -> Verdict:
    bundles = await account.catalogue()
    prices = [b.get("price") for b in bundles]
    wrong = [
        f"{b.get('name')}: {p!r}"
        for b, p in zip(bundles, prices, strict=True)
        if isinstance(p, bool) or not isinstance(p, int | float) or p < 0
    ]
    if wrong:
        return contradicted(f"no price on {len(wrong)} bundles, e.g. {wrong[0]}")
    numbers = sorted(float(p) for p in prices if isinstance(p, int | float))
    return confirmed(
        f"numbers on {len(bundles)} bundles, {numbers[0]:g} to {numbers[-1]:g}"
        " (read as the currency's major unit; the scale cannot be read)"
    )


async def order_body(account: EsimGoAccount) -> Verdict:
    """An order of ``type: validate`` (checked, never charged) in the client's shape."""
    response, seen = await account.validated_order()
    answer = _json(response)
    if response.is_success and isinstance(answer, dict):
        valid = answer.get("valid")
        return confirmed(f"{seen}, valid: {valid!r} {answer.get('statusMessage') or ''}".strip())
    if response.status_code in (400, 422):
        return contradicted(f"{seen} {error_message(response)!r}: the body was refused")
    return not_checked(f"{seen} {error_message(response)!r} does not tell")


async def currency(account: EsimGoAccount) -> Verdict:
    """A ``validate`` order's ``currency`` (the catalogue names none) is the one the
    catalogue's prices are read in, ``ESIMGO__CURRENCY``."""
    response, seen = await account.validated_order()
    answer = _json(response)
    if not response.is_success or not isinstance(answer, dict):
        raise NotChecked(f"{seen} {error_message(response)!r}: no answer to read")
    said = answer.get("currency")
    if not isinstance(said, str) or not said:
        raise NotChecked(f"{seen}: the answer names no currency")
    if said.upper() != account.currency:
        return contradicted(
            f"{seen}: currency {said!r}, but ESIMGO__CURRENCY={account.currency} reads the"
            " catalogue's prices"
        )
    return confirmed(f"{seen}: currency {said!r}, total {answer.get('total')!r}")


async def package_price(account: EsimGoAccount) -> Verdict:
    """The eSIM's assignments show no price (the audit reads no orders for one)."""
    found = await account.assignments()
    shown = [f"{name} {a.get('id')}: {price_fields(a)}" for name, a in found if price_fields(a)]
    if shown:
        return contradicted(
            f"assignments show what may be a price, unread by the audit: {shown[0]}"
            f" (and {len(shown) - 1} more)"
        )
    return confirmed(f"{len(found)} assignments on {account.iccid}, none showing a price")


async def order_refused_by_503(account: EsimGoAccount) -> Verdict:
    """An order of one bundle is answered at once, not with the 503 of an order eSIM Go
    processes meanwhile: then a 503 to one is a refusal. Asked by validating one (a
    ``validate`` is checked as a ``transaction`` is, and never charged)."""
    response, seen = await account.validated_order()
    if response.status_code == 503:
        return contradicted(
            f"{seen} {error_message(response)!r}: an order of one bundle is processed"
            " meanwhile, so a 503 to one may be an order taken"
        )
    if response.is_success:
        return confirmed(f"{seen}: an order of one bundle is answered at once")
    return not_checked(f"{seen} {error_message(response)!r} does not tell")


async def assignment_list(account: EsimGoAccount) -> Verdict:
    if account.iccid is None:
        raise NotChecked("needs --iccid")
    path = f"/esims/{quote(account.iccid)}/bundles"
    answer = await account.read(path, {"includeUsed": "true", "limit": "200"})
    seen = f"GET {path}?includeUsed=true&limit=200"
    try:
        found = assignments(answer)
    except _READ_ERRORS as exc:
        return contradicted(f"{seen}: no {{bundles: [{{name, assignments}}]}} ({exc!r})")
    missing = [
        f"{name} {a.get('id')}: no {field}"
        for name, a in found
        for field in (*ASSIGNMENT_FIELDS, "bundleState")
        if field not in a
    ]
    if missing:
        return contradicted(f"{seen}: {missing[0]} (and {len(missing) - 1} more)")
    if not found:
        raise NotChecked(f"no bundle on {account.iccid}")
    names = {name for name, _ in found}
    return confirmed(f"{seen}: {len(found)} assignments of {len(names)} bundles")


async def quantities(account: EsimGoAccount) -> Verdict:
    found = [(n, a) for n, a in await account.assignments() if not unlimited(a)]
    wrong = []
    for name, a in found:
        try:
            initial, remaining = whole(a["initialQuantity"]), whole(a["remainingQuantity"])
        except _READ_ERRORS as exc:
            wrong.append(f"{name} {a.get('id')}: {exc}")
            continue
        if initial < MIN_PASS_BYTES:
            wrong.append(f"{name} {a.get('id')}: initialQuantity {initial} is too small for bytes")
        elif remaining > initial:
            wrong.append(f"{name} {a.get('id')}: remainingQuantity {remaining} > {initial}")
    if wrong:
        return contradicted(f"{len(wrong)} of {len(found)} assignments: {wrong[0]}")
    if not found:
        raise NotChecked(f"only unlimited bundles on {account.iccid}")
    sizes = sorted(whole(a["initialQuantity"]) for _, a in found)
    return confirmed(f"integers on {len(found)} assignments, {sizes[0]} to {sizes[-1]} B")


async def time_format(account: EsimGoAccount) -> Verdict:
    found = await account.assignments()
    wrong, read = [], 0
    for name, a in found:
        for field in TIMES:
            value = a.get(field)
            try:
                moment = parse_time(value)
            except (TypeError, ValueError):
                wrong.append(f"{name} {a.get('id')} {field} {value!r}")
                continue
            if moment is not None and not 2000 <= moment.year < 2100:
                wrong.append(f"{name} {a.get('id')} {field} {value!r}")
            read += moment is not None
    if wrong:
        return contradicted(f"{len(wrong)} not RFC 3339 with an offset, e.g. {wrong[0]}")
    return confirmed(f"{read} times on {len(found)} assignments of {account.iccid}")


async def bundle_states(account: EsimGoAccount) -> Verdict:
    found = await account.assignments()
    states = Counter(str(a.get("bundleState")) for _, a in found)
    wrong = {s: n for s, n in states.items() if s not in WIRE.bundle_states}
    if wrong:
        return contradicted(f"unknown bundleState {_tally(Counter(wrong))} on {account.iccid}")
    return confirmed(f"{_tally(states)} on {account.iccid}")


async def assignment_times(account: EsimGoAccount) -> Verdict:
    """Started assignments carry startTime and endTime, unstarted ones no startTime; an
    assignment's window is its bundle's validity from its start."""
    found = await account.assignments()
    by_name = await account.catalogue_by_name()
    wrong, rolling = [], 0
    started = [(n, a) for n, a in found if a.get("bundleState") in STARTED_STATES]
    for name, a in found:
        if a.get("bundleState") in ("processing", "queued") and a.get("startTime"):
            wrong.append(f"{name} {a.get('id')} {a['bundleState']} with a startTime")
    for name, a in started:
        try:
            start, end = parse_time(a.get("startTime")), parse_time(a.get("endTime"))
        except (TypeError, ValueError):
            continue  # time_format says so
        if start is None or end is None:
            wrong.append(f"{name} {a.get('id')} {a['bundleState']} without startTime/endTime")
            continue
        validity = _validity(by_name.get(name))
        if validity is None:
            continue
        if abs((end - start) - validity) > timedelta(seconds=1):
            wrong.append(f"{name} {a.get('id')}: {end - start} from start to end, not {validity}")
        else:
            rolling += 1
    if wrong:
        return contradicted(f"{len(wrong)} disagree, e.g. {wrong[0]}")
    if not started:
        raise NotChecked(f"no started assignment on {account.iccid}")
    return confirmed(
        f"{len(started)} started assignments carry both; {rolling} end their bundle's"
        " validity after their start"
    )


async def latest_assignment(account: EsimGoAccount) -> Verdict:
    found = await account.assignments()
    assert account.iccid is not None
    name = found[-1][0]
    path = f"/esims/{quote(account.iccid)}/bundles/{quote(name, safe='')}"
    answer = await account.read(path)
    try:
        one = latest(answer, name)
        listed = latest(
            {"bundles": [{"name": name, "assignments": [a for n, a in found if n == name]}]}, name
        )
    except _READ_ERRORS as exc:
        return contradicted(
            f"GET {path}: neither {{name, assignments}} nor an assignment ({exc!r})"
        )
    if one is None or listed is None:
        return contradicted(f"GET {path}: no assignment")
    if str(one.get("id")) != str(listed.get("id")):
        return contradicted(
            f"GET {path} answered assignment {one.get('id')};"
            f" the latest listed is {listed.get('id')}"
        )
    return confirmed(f"GET {path} answered the latest assignment, {one.get('id')}")


async def line_id(account: EsimGoAccount) -> Verdict:
    found = await account.assignments()
    assert account.iccid is not None
    wrong = []
    for name, a in found:
        made = LineName(account.iccid, name, str(a.get("id")))
        try:
            if LineName.parse(str(made)) != made:
                wrong.append(str(made))
        except ValueError:
            wrong.append(str(made))
    if wrong:
        return contradicted(f"{len(wrong)} ids do not read back, e.g. {wrong[0]!r}")
    return confirmed(
        f"{len(found)} line ids read back, e.g. {LineName(account.iccid, *_first(found))}"
    )


async def revoke(account: EsimGoAccount) -> Verdict:
    """A revoke of ``type: validate`` for an assignment id no carrier has issued: a route
    that exists looks it up and refuses it naming it; none answers 404/405 naming none."""
    found = await account.assignments()
    assert account.iccid is not None
    name = found[0][0]
    probe = f"doctor-{uuid.uuid4()}"
    path = f"/esims/{quote(account.iccid)}/bundles/{quote(name, safe='')}/assignments/{probe}"
    response = await account.request("DELETE", path, {"type": "validate"})
    status, message = response.status_code, error_message(response)
    seen = f"DELETE …/assignments/<none> of type validate: HTTP {status} {message!r}"
    untold = "; revoking an active assignment is not probed"
    if status in (400, 404, 409, 422) and (probe in message or "assignment" in message.lower()):
        return confirmed(f"{seen}: the route looked the assignment up{untold}")
    if status in (404, 405):
        return contradicted(f"{seen} names no assignment: no such route")
    return not_checked(f"{seen} does not tell a route from none{untold}")


async def revoke_status(account: EsimGoAccount) -> Verdict:
    return not_checked(
        "only a revoke that takes effect says what it refunded, and the doctor revokes"
        " nothing: a status naming the balance or the inventory is read as that refund,"
        " any other as none"
    )


async def rate_limit_headers(account: EsimGoAccount) -> Verdict:
    """Every answer of this run carried the four headers, readable; the costs seen."""
    seen = account.windows
    if not seen:
        raise NotChecked("no answer read")
    incomplete = [call for call, window in seen if not window.complete]
    if incomplete:
        return contradicted(
            f"{len(incomplete)} of {len(seen)} answers without readable X-Ratelimit-*,"
            f" e.g. {incomplete[0]}"
        )
    costs: dict[str, set[int]] = {}
    for call, window in seen:
        assert window.cost is not None
        costs.setdefault(call, set()).add(window.cost)
    shown = ", ".join(f"{call} {'/'.join(map(str, sorted(c)))}" for call, c in costs.items())
    return confirmed(f"on all {len(seen)} answers; costs: {shown}")


async def webhook_digest(account: EsimGoAccount) -> Verdict:
    return not_checked(
        "eSIM Go signs the callbacks it sends, nothing here can be read: hex and base64"
        " digests are both accepted"
    )


CHECKS = (
    auth,
    catalogue,
    data_amount_units,
    bundle_duration,
    price,
    order_body,
    order_refused_by_503,
    currency,
    package_price,
    assignment_list,
    quantities,
    time_format,
    bundle_states,
    assignment_times,
    latest_assignment,
    line_id,
    revoke,
    revoke_status,
    rate_limit_headers,
    webhook_digest,
)


def _named_mb(name: str) -> float | None:
    found = NAMED_AMOUNT.search(name)
    if found is None:
        return None
    return float(found.group(1)) * (1000 if found.group(2) == "GB" else 1)


def _validity(bundle: dict[str, Any] | None) -> timedelta | None:
    if bundle is None:
        return None
    try:
        seconds = bundle.get("durationSeconds")
        if seconds is not None:
            return timedelta(seconds=whole(seconds))
        return timedelta(seconds=whole(bundle["duration"]) * DAY_SECONDS)
    except _READ_ERRORS:
        return None


def _first(found: list[tuple[str, dict[str, Any]]]) -> tuple[str, str]:
    name, a = found[0]
    return name, str(a.get("id"))


def _shape(path: str) -> str:
    """A request's path with its eSIM and bundle left out: one cost per endpoint."""
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "esims":
        parts[2] = "{iccid}"
        if len(parts) > 4:
            parts[4] = "{name}"
        if len(parts) > 6:
            parts[6] = "{id}"
    return "/".join(parts)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _body(response: httpx.Response) -> str:
    return response.text[:80]


def _tally(counts: Counter[str]) -> str:
    return ", ".join(f"{key} ×{n}" for key, n in sorted(counts.items()))
