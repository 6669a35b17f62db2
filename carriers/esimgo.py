"""The eSIM Go client: API v2.4 REST/JSON over one long-lived httpx client.

Spoken as CARRIERS.md section 3 records it: the key in ``X-API-Key``; a pass is a
bundle of the catalogue, bought straight onto the eSIM (``POST /orders``, ``assign:
true``), where it queues and starts by itself when the eSIM uses data and no earlier
bundle serves it (``rotation`` ``queued``); a line is one assignment of a bundle to the
eSIM (:mod:`carriers.esimgo_records`), read from ``GET /esims/{iccid}/bundles`` and
revoked with ``DELETE /esims/{iccid}/bundles/{name}/assignments/{id}``. Quantities are
bytes, times RFC 3339 UTC. The client paces itself by eSIM Go's rate-limit headers
(:mod:`carriers.esimgo_pacing`). These readings and the choices made where the record
is silent are named once, in :data:`WIRE`, and the carrier doctor checks them.

Error mapping (reads are GETs and safe to repeat; POST and DELETE change state):

- connection refused, connect/pool timeout (nothing was sent) → ``CarrierUnavailable``
- 403 ``Forbidden`` (a missing or refused key) → ``CarrierRejected`` saying so; other 403s
  (no bundles left, ICCID not accessible), 400, 404 and other 4xx → ``CarrierRejected``
  with eSIM Go's ``message`` and the status as code
- 429 → ``CarrierUnavailable`` with ``retry_after`` from ``Retry-After``
- 503 ("Processing – come back later") → ``CarrierUnavailable`` with ``retry_after`` on a
  read and on an order of one bundle (eSIM Go answers 503 while it processes only orders
  of more than 5 bundles, ``WIRE.order_refused_by_503``); on a revoke
  ``CarrierOutcomeUnknown``, since it may have been taken
- before either becomes an error, the client sends the request again itself, as the
  record asks (CARRIERS.md 4.3: retry 429 and 503 using ``Retry-After``), up to
  ``retries`` times where ``Retry-After`` is short (``INLINE_WAIT_MAX``): a 429 in any
  case (the request was refused, nothing taken), a 503 where it is a refusal
- read/write timeout, dropped connection, 500, 502, 504 → ``CarrierOutcomeUnknown`` on a
  state change, ``CarrierUnavailable`` on a read
- a 2xx body that is not the expected JSON, or an assignment that cannot be a line
  (no allowance) → as a dropped connection
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from carriers.base import CarrierLine, CarrierProduct, LineUsage, Refund
from carriers.errors import (
    LAST_BUNDLE,
    CarrierOutcomeUnknown,
    CarrierRejected,
    CarrierUnavailable,
    retry_after_seconds,
)
from carriers.esimgo_pacing import PacedTransport, WindowPacer
from carriers.esimgo_records import (
    OPEN_STATES,
    STARTED_STATES,
    LineName,
    assigned_at,
    assignments,
    latest,
    line,
    product,
    unlimited,
)
from carriers.ratelimit import limited
from config import Settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Wire:
    """How this client speaks eSIM Go, named once: the record's facts it relies on
    (CARRIERS.md section 3), and its choices where the record is silent ([NOT PUBLIC],
    marked). ``python -m carriers.doctor esimgo`` checks each against an account."""

    auth: str = 'X-API-Key: <key>; a missing or refused key answers 403 {"message": "Forbidden"}'
    """Every request carries the key; error bodies are ``{"message"}``."""
    catalogue: str = "GET /catalogue?page&perPage -> {bundles: [{name, dataAmount, duration}]}"
    """[NOT PUBLIC] The page's wrapper (``bundles``; ``pageCount`` where given): pages are
    read from 1 until a short or empty page, or ``pageCount``. Names are case-sensitive."""
    data_amount_units: str = "MB of 10^6 bytes"
    """[NOT PUBLIC] A bundle's ``dataAmount`` is in MB (the record says MB, not which):
    decimal, as bundle names count (``esim_1GB_…``: 1000 MB) and assignments in bytes."""
    bundle_duration: str = "duration in days; durationSeconds on a simulator's compressed bundles"
    """A bundle's validity is ``duration`` whole days; a simulator gives ``durationSeconds``
    (the exact validity of its compressed-time bundles) and ``throttleKbps`` (the speed
    after depletion): no carrier fields, read where present."""
    price: str = "price in the account currency's major unit"
    """[NOT PUBLIC] ``price`` 1.5 is 150 cents."""
    order_body: str = (
        '{"type": "transaction", "assign": true, "order": [{"type": "bundle", "quantity": 1,'
        ' "item": <bundle>, "iccids": [<iccid>], "allowReassign": false}]}'
    )
    """An order buys one bundle onto the eSIM, never onto a new one; ``profileID`` is not
    sent ([NOT PUBLIC] where it sits). Our reference has no place: an order is recognised
    by its eSIM, bundle and ``assignmentDateTime`` (activities/carrier.py, ``ours``)."""
    order_refused_by_503: str = "an order of one bundle answered 503 was not taken"
    """eSIM Go processes asynchronously, answering 503 with ``Retry-After`` meanwhile, the
    orders of more than 5 bundles (CARRIERS.md 3.1, release notes 2.2.0); ours are of one,
    answered at once. [INFERRED] So a 503 to one of ours is a refusal (the service
    unavailable), sent again after ``Retry-After`` like a 429, not an order in doubt held
    for ``in_doubt_seconds``. A timeout, a dropped answer, a 500 or a 504 stays in doubt."""
    currency: str = "USD"
    """[NOT PUBLIC] The currency of the catalogue's ``price``: the catalogue names none, an
    order's answer does (``currency``, with its ``total``, CARRIERS.md 3.3). A line's price
    is the order's own; the catalogue's is read in ``ESIMGO__CURRENCY``, which the doctor
    holds against a ``validate`` order's ``currency``."""
    package_price: str = "an assignment shows no price; the audit reads no orders"
    """[NOT PUBLIC] What eSIM Go charged for an assignment. The bundle listing shows no
    price (CARRIERS.md 3.5); an order's answer does (``total``, ``currency``, each line's
    ``pricePerUnit``, 3.3), and the line records it when it is bought. ``GET /orders``
    and ``GET /orders/{orderReference}`` are on the record by name only: no filter by
    eSIM or bundle, no paging, no order naming the assignment it made. Read by the audit,
    their cost would grow with the account's history (or with every line's order read
    again), and matching an order to an assignment would be a guess. So ``find_lines``
    carries no price: the audit finds an eSIM Go line with no recorded price
    (``unpriced_purchase``, flagged) but compares no amount (``price_mismatch`` needs a
    price the package shows). The doctor confirms the assignments show none."""
    assignment_list: str = (
        "GET /esims/{iccid}/bundles?includeUsed&limit=200 -> {bundles: [{name, assignments:"
        " [{id, initialQuantity, remainingQuantity, assignmentDateTime, bundleState}]}]}"
    )
    """Without ``includeUsed`` the bundles not yet used up or expired (what is open);
    with it those too. [NOT PUBLIC] Whether revoked and lapsed ones are listed: a line
    not found is refused (404)."""
    quantities: str = "initialQuantity and remainingQuantity in bytes"
    """A line's allowance is ``initialQuantity``; used = initial - remaining."""
    time_format: str = "RFC 3339 with an offset (Z)"
    """``assignmentDateTime``, ``startTime``, ``endTime``; a time without an offset is
    unreadable."""
    bundle_states: tuple[str, ...] = (
        "processing",
        "queued",
        "active",
        "depleted",
        "expired",
        "revoked",
        "lapsed",
    )
    """processing and queued: scheduled; active: active; depleted: active, its allowance
    used (throttled until its end); expired, revoked, lapsed: ended."""
    assignment_times: str = "startTime and endTime once started; the line ends at endTime"
    """[NOT PUBLIC] Their names ([INFERRED] from the callback), and a bundle's window:
    ``duration`` from its start (a 1-day bundle rolls 24 h from first use), never computed:
    ``endTime`` is trusted."""
    latest_assignment: str = (
        "GET /esims/{iccid}/bundles/{name} -> {name, assignments: [...]} or one assignment"
    )
    """[NOT PUBLIC] The answer's shape; of the assignments in it, the latest by
    ``assignmentDateTime`` is the one just ordered: one read, whatever the eSIM's age."""
    line_id: str = "{iccid}:{bundle name}:{assignment id}"
    """Our own: eSIM Go finds an assignment by all three. ICCIDs are digits and assignment
    ids carry no ``:``."""
    revoke: str = (
        "DELETE /esims/{iccid}/bundles/{name}/assignments/{id}?type=transaction"
        "&refundToBalance=<setting>"
    )
    """Ends one assignment, [NOT PUBLIC] an active one too. Never the last open bundle of
    an eSIM never installed (the returns-process trap, :func:`strands_esim`)."""
    revoke_status: str = '{"status": "Revoked" | "... refunded to balance" | "... to inventory"}'
    """[NOT PUBLIC] The revoke's ``status`` text: one naming the balance says the bundle was
    credited to it, one naming the inventory that it went back there, any other that
    nothing was refunded (:func:`refund_of`)."""
    rate_limit_headers: tuple[str, ...] = (
        "X-Ratelimit-Limit",
        "X-Ratelimit-Remaining",
        "X-Ratelimit-Reset",
        "X-Ratelimit-Cost",
    )
    """On every answer; [NOT PUBLIC] what each endpoint costs: the client paces by the
    headers, not by costs it would have to guess."""
    webhook_digest: str = "hex or base64"
    """[NOT PUBLIC] ``X-Signature-SHA256`` is HMAC-SHA256 of the raw body keyed with the
    API key; the record's samples encode it in hex and in base64: both are accepted
    (:mod:`carriers.esimgo_events`)."""


WIRE = Wire()
LIST_LIMIT = 200  # the most one bundles read returns
# The longest Retry-After the client waits out itself before sending again (eSIM Go's
# 429s say 1 s); a longer one is the caller's to wait, through its own retries.
INLINE_WAIT_MAX = 2.0
# A carrier's clock may run this far behind ours, and its times be truncated to the
# second: an assignment made since an order left shows at most this much earlier.
CLOCK_SKEW = timedelta(seconds=2)
_STATE_CHANGES = {"POST", "DELETE"}

T = TypeVar("T")


def strands_esim(iccid_assignments: list[dict[str, Any]], assignment_id: str) -> bool:
    """The last-bundle rule: revoking ``assignment_id`` would leave an eSIM that was never
    installed without any open bundle, and eSIM Go may then take the eSIM off the account
    (the returns process). An eSIM shows it was installed by any assignment that started."""
    open_ids = {str(a.get("id")) for a in iccid_assignments if a.get("bundleState") in OPEN_STATES}
    installed = any(
        a.get("bundleState") in STARTED_STATES or a.get("startTime") for a in iccid_assignments
    )
    return open_ids == {assignment_id} and not installed


def refund_of(status: Any) -> Refund:
    """What a revoke refunded, by its ``status`` (``WIRE.revoke_status``)."""
    text = str(status or "").lower()
    if "balance" in text:
        return "balance"
    if "inventory" in text:
        return "inventory"
    return "none"


class EsimGoCarrier:
    """The ``Carrier`` for eSIM Go; raises only ``CarrierError``s."""

    name = "esimgo"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        page_size: int = 100,
        rate_limit_per_second: float = 0.0,
        in_doubt_seconds: float = 60.0,
        refund_to_balance: bool = False,
        pacer: WindowPacer | None = None,
        retries: int = 2,
        currency: str = WIRE.currency,
    ) -> None:
        self.page_size = page_size
        self.currency = currency
        self.retries = retries
        self.in_doubt_seconds = in_doubt_seconds
        self.refund_to_balance = refund_to_balance
        self.pacer = pacer or WindowPacer()
        paced = PacedTransport(limited(transport, rate_limit_per_second), self.pacer)
        self._client = http_client(base_url, api_key, timeout, paced)

    @classmethod
    def from_settings(cls, settings: Settings) -> EsimGoCarrier:
        esimgo = settings.esimgo
        return cls(
            esimgo.base_url,
            esimgo.api_key.get_secret_value(),
            timeout=settings.carrier_timeout_seconds,
            rate_limit_per_second=esimgo.rate_limit_per_second,
            in_doubt_seconds=esimgo.in_doubt_seconds,
            refund_to_balance=esimgo.refund_to_balance,
            currency=esimgo.currency,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def list_products(self) -> list[CarrierProduct]:
        """Every bundle of the catalogue this client can read (one it cannot is logged
        and left out)."""
        products = []
        for b in await self._catalogue():
            try:
                products.append(product(b, self.currency))
            except (KeyError, TypeError, ValueError) as exc:
                logger.warning("eSIM Go bundle %r is no pass we can rotate: %r", b.get("name"), exc)
        return products

    async def order(
        self,
        iccid: str,
        carrier_product_id: str,
        reference: str,
        start_at: datetime | None = None,
    ) -> CarrierLine:
        """Buy the bundle onto the eSIM, then read back the assignment it made. A bundle
        starts by itself when the eSIM uses data and no earlier bundle serves it: eSIM Go
        takes no start time for an order, nor our reference."""
        item = {
            "type": "bundle",
            "quantity": 1,
            "item": carrier_product_id,
            "iccids": [iccid],
            "allowReassign": False,
        }
        body = {"type": "transaction", "assign": True, "order": [item]}
        asked = datetime.now(UTC)
        answer = await self._request("POST", "/orders", json=body, refused_by_503=True)
        cost = order_cost(answer)
        try:
            answer = await self._request("GET", _bundle_path(iccid, carrier_product_id))
        except (CarrierUnavailable, CarrierRejected) as exc:
            raise self._lost(True, f"ordered; reading its assignment: {exc}") from exc
        made = self._read(lambda a: latest(a, carrier_product_id), answer, True)
        if made is None or self._read(assigned_at, made, True) < asked - CLOCK_SKEW:
            # Bought (eSIM Go said so) but its assignment does not show yet: the order is
            # in doubt, and found by its time once it shows.
            raise CarrierOutcomeUnknown(
                self.name, f"ordered {carrier_product_id} on {iccid}; its assignment not yet shown"
            )
        bought = self._read(lambda a: line(iccid, carrier_product_id, a), made, True)
        return bought.model_copy(update=cost)

    async def activate(self, line_id: str) -> CarrierLine:
        """The line as it stands: eSIM Go has no start call, a queued bundle starts by
        itself, so activating a queued line is confirming its start (DESIGN section 5)."""
        return await self.get_line(line_id)

    async def deactivate(self, line_id: str) -> CarrierLine:
        """Revoke the assignment; one already ended needs nothing. Refused (``last_bundle``)
        where it would strand an eSIM never installed (:func:`strands_esim`)."""
        name = self._name(line_id)
        # The open bundles first: they hold the line, and most often show the eSIM
        # installed; the used ones only where they do not (bounded reads, at any age).
        seen = await self._assignments(name.iccid, include_used=False)
        if not any(_is(name, bundle, a) for bundle, a in seen):
            seen = await self._assignments(name.iccid, include_used=True)
        found = self._find(name, seen)
        if found.status == "ended":
            return found
        if strands_esim([a for _, a in seen], name.assignment_id):
            seen = await self._assignments(name.iccid, include_used=True)
        if strands_esim([a for _, a in seen], name.assignment_id):
            raise CarrierRejected(
                self.name,
                f"{line_id} is the last bundle of an eSIM never installed: revoking it would"
                " send the eSIM to eSIM Go's returns process",
                code=LAST_BUNDLE,
            )
        refund = "true" if self.refund_to_balance else "false"
        params = {"type": "transaction", "refundToBalance": refund}
        path = f"{_bundle_path(name.iccid, name.bundle)}/assignments/{quote(name.assignment_id)}"
        answer = await self._request("DELETE", path, params=params)
        revoked_at = datetime.now(UTC)
        try:
            after = await self.get_line(line_id)
        except CarrierRejected:  # no longer listed: revoked
            after = found
        # eSIM Go said it revoked it (the list may not show so yet), and when is ours.
        return after.model_copy(
            update={
                "status": "ended",
                "ended_at": after.ended_at or revoked_at,
                "refund": refund_of(answer.get("status")),
            }
        )

    async def get_line(self, line_id: str) -> CarrierLine:
        """The open bundles first (bounded by what is open); an ended line from the list
        with the used ones too."""
        name = self._name(line_id)
        for include_used in (False, True):
            found = await self._assignments(name.iccid, include_used)
            if any(_is(name, bundle, a) for bundle, a in found):
                return self._find(name, found)
        raise CarrierRejected(self.name, f"no assignment {line_id}", code="404")

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        """Every assignment on the eSIM eSIM Go lists, the used ones too (up to 200);
        unlimited ones are none of ours, and left out."""
        found = await self._assignments(iccid, include_used=True)
        return [
            self._read(lambda x: line(iccid, x[0], x[1]), (bundle, a), False)
            for bundle, a in found
            if not unlimited(a)
        ]

    async def open_lines(self, iccid: str, carrier_product_id: str) -> list[CarrierLine]:
        """The bundle's assignments on the eSIM not yet used up or ended: one read of the
        open bundles, as long for an eSIM of a year as for one of a day."""
        found = await self._assignments(iccid, include_used=False)
        lines = [
            self._read(lambda a: line(iccid, carrier_product_id, a), a, False)
            for bundle, a in found
            if bundle == carrier_product_id and not unlimited(a)
        ]
        # Every one is read, so a state this client does not know fails the look (and is
        # retried) rather than hiding an order of ours.
        return [found_line for found_line in lines if found_line.status != "ended"]

    async def usage(self, line_id: str) -> LineUsage:
        found = await self.get_line(line_id)
        return LineUsage(
            line_id=found.line_id,
            used_bytes=found.used_bytes,
            allowance_bytes=found.allowance_bytes,
            observed_at=datetime.now(UTC),
            iccid=found.iccid,
        )

    def _find(self, name: LineName, found: list[tuple[str, dict[str, Any]]]) -> CarrierLine:
        for bundle, a in found:
            if _is(name, bundle, a):
                return self._read(lambda x: line(name.iccid, name.bundle, x), a, False)
        raise CarrierRejected(self.name, f"no assignment {name}", code="404")

    async def _assignments(
        self, iccid: str, include_used: bool
    ) -> list[tuple[str, dict[str, Any]]]:
        params = {"limit": str(LIST_LIMIT)}
        if include_used:
            params["includeUsed"] = "true"
        answer = await self._request("GET", f"/esims/{quote(iccid)}/bundles", params=params)
        return self._read(assignments, answer, False)

    async def _catalogue(self) -> list[dict[str, Any]]:
        """Every bundle of the catalogue, page by page from 1 (a page of nothing new ends
        it too: a catalogue that ignores ``page`` is read once)."""
        bundles: dict[str, dict[str, Any]] = {}
        page = 1
        while True:
            params = {"page": str(page), "perPage": str(self.page_size)}
            answer = await self._request("GET", "/catalogue", params=params)
            batch, pages = answer.get("bundles"), answer.get("pageCount")
            if not isinstance(batch, list):
                raise CarrierUnavailable(self.name, "GET /catalogue: page without bundles")
            new = {
                str(b.get("name")): b
                for b in batch
                if isinstance(b, dict) and str(b.get("name")) not in bundles
            }
            bundles.update(new)
            last = isinstance(pages, int) and page >= pages
            if last or not new or len(batch) < self.page_size:
                return list(bundles.values())
            page += 1

    def _name(self, line_id: str) -> LineName:
        try:
            return LineName.parse(line_id)
        except ValueError as exc:
            raise CarrierRejected(self.name, str(exc), code="400") from exc

    def _read(self, convert: Callable[[Any], T], data: Any, changes_state: bool) -> T:
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
        refused_by_503: bool = False,
    ) -> dict[str, Any]:
        """The JSON object answered. A 503 is a refusal on a read, and on a state change
        that says so (``refused_by_503``); on any other it is an outcome unknown."""
        refused_by_503 = refused_by_503 or method not in _STATE_CHANGES
        for _ in range(self.retries):
            response = await self._send(method, path, json, params)
            status = response.status_code
            if status == 429 or (status == 503 and refused_by_503):
                wait = retry_after_seconds(response.headers.get("Retry-After"))
                if wait is None or wait <= INLINE_WAIT_MAX:
                    # A 429 holds every request of this client meanwhile (the pacer).
                    await asyncio.sleep(0 if status == 429 else (wait or 1.0))
                    continue
            break
        else:
            response = await self._send(method, path, json, params)
        return self._answer(method, path, response, refused_by_503)

    async def _send(
        self,
        method: str,
        path: str,
        json: dict[str, Any] | None,
        params: dict[str, str] | None,
    ) -> httpx.Response:
        try:
            return await self._client.request(method, path, json=json, params=params)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise CarrierUnavailable(self.name, f"{method} {path}: {exc!r}") from exc
        except httpx.TransportError as exc:
            raise self._lost(method in _STATE_CHANGES, f"{method} {path}: {exc!r}") from exc

    def _answer(
        self, method: str, path: str, response: httpx.Response, refused_by_503: bool
    ) -> dict[str, Any]:
        """The JSON object answered, or the error it says."""
        changes_state = method in _STATE_CHANGES
        status = response.status_code
        retry_after = retry_after_seconds(response.headers.get("Retry-After"))
        if status == 429 or (status == 503 and refused_by_503):
            raise CarrierUnavailable(self.name, f"{method} {path}: HTTP {status}", retry_after)
        if status >= 500:
            raise self._lost(changes_state, f"{method} {path}: HTTP {status}")
        if status == 403 and error_message(response) == "Forbidden":
            raise CarrierRejected(
                self.name, "the API key was refused (403 Forbidden): check ESIMGO__API_KEY", "403"
            )
        if status >= 400:
            raise CarrierRejected(self.name, error_message(response), code=str(status))
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


def order_cost(answer: dict[str, Any]) -> dict[str, Any]:
    """What an order of one bundle cost, from its answer's ``total`` (the currency's major
    unit, as ``price`` is) and ``currency``: the line's ``price_cents`` and ``currency``.
    Nothing where the answer does not say both readably: the bundle is bought all the
    same, and the catalogue's price stands in (activities/carrier.py)."""
    total, currency = answer.get("total"), answer.get("currency")
    if isinstance(total, bool) or not isinstance(total, int | float) or total < 0:
        return {}
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        return {}
    return {"price_cents": round(total * 100), "currency": currency.upper()}


def _is(name: LineName, bundle: str, a: dict[str, Any]) -> bool:
    return bundle == name.bundle and str(a.get("id")) == name.assignment_id


def _bundle_path(iccid: str, bundle: str) -> str:
    return f"/esims/{quote(iccid)}/bundles/{quote(bundle, safe='')}"


def http_client(
    base_url: str,
    api_key: str,
    timeout: float,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """The client's HTTP settings (``base_url`` names the API version), for it and its
    doctor."""
    return httpx.AsyncClient(
        base_url=base_url.rstrip("/"),
        headers={"X-API-Key": api_key, "Accept": "application/json"},
        timeout=timeout,
        transport=transport,
    )


def error_message(response: httpx.Response) -> str:
    """eSIM Go's ``message`` of a refusal, else the start of its body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return str(data["message"])
    return response.text[:200] or f"HTTP {response.status_code}"
