"""A small eSIM Go that keeps state, as an ``httpx.MockTransport``: it answers exactly the
shapes CARRIERS.md section 3 records (and the client's WIRE choices where it is silent),
for the client's and the doctor's tests."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx

KEY = "esimgo-test-key"
BASE = "http://esimgo.test/v2.4"
T0 = datetime(2026, 12, 7, 8, 0, 0, tzinfo=UTC)

CATALOGUE = [
    {
        "name": "esim_1GB_1D_GB_V2",
        "description": "eSIM, 1GB, 1 Day, United Kingdom, V2",
        "groups": ["Standard eSIM Bundles"],
        "countries": [{"name": "United Kingdom", "region": "Europe", "iso": "GB"}],
        "dataAmount": 1000,
        "duration": 1,
        "speed": ["4G", "5G"],
        "autostart": True,
        "unlimited": False,
        "roamingEnabled": [],
        "price": 1.25,
        "billingType": "FixedCost",
    },
    {
        "name": "esim_3GB_1D_GB_V2",
        "description": "eSIM, 3GB, 1 Day, United Kingdom, V2",
        "dataAmount": 3000,
        "duration": 1,
        "unlimited": False,
        "price": 2.5,
    },
    {
        "name": "esim_UL_1D_GB_V2",
        "description": "eSIM, Unlimited, 1 Day, United Kingdom, V2",
        "dataAmount": -1,
        "duration": 1,
        "unlimited": True,
        "price": 9.0,
    },
    {
        "name": "esim_1MB_10S_SIM",
        "description": "Compressed: 1 MB for 10 s",
        "dataAmount": 1,
        "duration": 1,
        "durationSeconds": 10,
        "unlimited": False,
        "price": 0.01,
    },
]


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Assignment:
    id: str
    iccid: str
    bundle: str
    initial: int
    assigned_at: datetime
    state: str = "queued"
    remaining: int | None = None
    start: datetime | None = None
    end: datetime | None = None
    # Fields an account shows beyond the record's (e.g. a price), merged into the answer.
    extra: dict[str, Any] = field(default_factory=dict)

    def wire(self) -> dict[str, Any]:
        shown: dict[str, Any] = {
            "id": self.id,
            "assignmentReference": f"ref-{self.id}",
            "callTypeGroup": "data",
            "initialQuantity": self.initial,
            "remainingQuantity": self.initial if self.remaining is None else self.remaining,
            "assignmentDateTime": rfc3339(self.assigned_at),
            "bundleState": self.state,
            "unlimited": False,
        }
        if self.start is not None:
            shown["startTime"] = rfc3339(self.start)
        if self.end is not None:
            shown["endTime"] = rfc3339(self.end)
        return {**shown, **self.extra}


@dataclass
class Reply:
    """A forced answer for the next request matching ``method`` (any if None)."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str | None = None
    error: Exception | None = None
    after: bool = False  # take effect (the request is handled), then answer this


class FakeEsimGo:
    """One account: eSIMs, the catalogue, assignments; every request logged."""

    def __init__(self, key: str = KEY) -> None:
        self.key = key
        self.catalogue = [dict(b) for b in CATALOGUE]
        self.esims: dict[str, list[Assignment]] = {}
        self.requests: list[httpx.Request] = []
        self.replies: list[Reply] = []
        self.now = datetime.now(UTC)
        self.new_state = "queued"  # an order's assignment: "processing" until applied
        self.show_orders = True  # False: an order's assignment is not listed yet
        self.hidden: Assignment | None = None
        self.rate_headers = True
        self.cost = 1
        self.latest_shape = "bundle"  # or "assignment"
        self.latest_is_oldest = False  # True: GET .../bundles/{name} answers the oldest
        self.check_key = True  # False: any key is let in
        self.order_answer: dict[str, Any] = {}  # fields an order's answer says otherwise
        self._ids = itertools.count(215009266)

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def add_esim(self, iccid: str) -> None:
        self.esims.setdefault(iccid, [])

    def assign(
        self, iccid: str, bundle: str, state: str = "queued", at: datetime | None = None, **kw: Any
    ) -> Assignment:
        """An assignment made at ``at`` (else now: one second after the last, at least)."""
        amount = next(b for b in self.catalogue if b["name"] == bundle)["dataAmount"]
        if at is None:
            self.now = at = max(self.now + timedelta(seconds=1), datetime.now(UTC))
        a = Assignment(str(next(self._ids)), iccid, bundle, amount * 1_000_000, at, state, **kw)
        self.esims.setdefault(iccid, []).append(a)
        return a

    def start(self, a: Assignment, used: int = 0) -> None:
        a.state, a.start = "active", self.now
        a.end = self.now + timedelta(days=1)
        a.remaining = a.initial - used

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        forced = next((r for r in self.replies if r.method in (None, request.method)), None)
        if forced is not None:
            self.replies.remove(forced)
            if forced.error is not None:
                if forced.after:
                    self._answer(request)
                raise forced.error
            if forced.after:
                self._answer(request)
            return self._response(forced.status, forced.body, forced.headers)
        return self._answer(request)

    def _response(self, status: int, body: Any, headers: dict[str, str]) -> httpx.Response:
        all_headers = dict(headers)
        if self.rate_headers:
            all_headers.setdefault("X-Ratelimit-Limit", "10")
            all_headers.setdefault("X-Ratelimit-Remaining", "9")
            all_headers.setdefault("X-Ratelimit-Reset", rfc3339(self.now + timedelta(seconds=1)))
            all_headers.setdefault("X-Ratelimit-Cost", str(self.cost))
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.Response(status, content=content, headers=all_headers)

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if self.check_key and request.headers.get("X-API-Key") != self.key:
            return self._response(403, {"message": "Forbidden"}, {})
        path = unquote(request.url.raw_path.decode().split("?")[0])
        assert path.startswith("/v2.4/"), path
        parts = path.removeprefix("/v2.4/").split("/")
        q = request.url.params
        route: Callable[..., httpx.Response] | None = None
        args: tuple[Any, ...] = ()
        if request.method == "GET" and parts == ["catalogue"]:
            route, args = self._catalogue, (int(q.get("page", "1")), int(q.get("perPage", "50")))
        elif request.method == "POST" and parts == ["orders"]:
            route, args = self._order, (json.loads(request.content),)
        elif request.method == "GET" and parts[0] == "esims" and parts[2:] == ["bundles"]:
            limit = int(q.get("limit", "15"))
            route, args = self._bundles, (parts[1], q.get("includeUsed") == "true", limit)
        elif request.method == "GET" and parts[0] == "esims" and len(parts) == 4:
            route, args = self._latest, (parts[1], parts[3])
        elif request.method == "DELETE" and len(parts) == 6 and parts[4] == "assignments":
            route, args = self._revoke, (parts[1], parts[3], parts[5], q.get("type"))
        if route is None:
            return self._response(404, {"message": "Not Found"}, {})
        return route(*args)

    def _catalogue(self, page: int, per_page: int) -> httpx.Response:
        start = (page - 1) * per_page
        pages = max(1, -(-len(self.catalogue) // per_page))
        body = {"bundles": self.catalogue[start : start + per_page], "pageCount": pages}
        return self._response(200, body, {})

    def _order(self, body: dict[str, Any]) -> httpx.Response:
        item = body["order"][0]
        (iccid,) = item["iccids"]
        if iccid not in self.esims:
            return self._response(403, {"message": "ICCID not accessible"}, {})
        if not any(b["name"] == item["item"] for b in self.catalogue):
            return self._response(400, {"message": f"bundle {item['item']} not found"}, {})
        price = next(b for b in self.catalogue if b["name"] == item["item"])["price"]
        if body["type"] == "transaction":
            a = self.assign(iccid, item["item"], self.new_state)
            if not self.show_orders:
                self.esims[iccid].remove(a)
                self.hidden = a
        answer = {
            "order": [
                {
                    "type": "bundle",
                    "item": item["item"],
                    "quantity": 1,
                    "subTotal": price,
                    "pricePerUnit": price,
                    "iccids": [iccid],
                }
            ],
            "total": price,
            "currency": "USD",
            "valid": True,
            "createdDate": rfc3339(self.now),
            "assigned": True,
            "status": "Completed" if body["type"] == "transaction" else "Validated",
            "statusMessage": "",
            "orderReference": "ord-1",
            "runningBalance": 100.0,
        }
        answer.update(self.order_answer)
        return self._response(200, answer, {})

    def _listed(self, iccid: str, include_used: bool) -> list[Assignment]:
        hidden = {"expired", "depleted"} if not include_used else set()
        return [a for a in self.esims.get(iccid, []) if a.state not in hidden]

    def _bundles(self, iccid: str, include_used: bool, limit: int) -> httpx.Response:
        if iccid not in self.esims:
            return self._response(403, {"message": "ICCID not accessible"}, {})
        by_name: dict[str, list[dict[str, Any]]] = {}
        for a in self._listed(iccid, include_used)[:limit]:
            by_name.setdefault(a.bundle, []).append(a.wire())
        bundles = [
            {"name": name, "description": name, "assignments": found}
            for name, found in by_name.items()
        ]
        return self._response(200, {"bundles": bundles}, {})

    def _latest(self, iccid: str, bundle: str) -> httpx.Response:
        found = [a for a in self.esims.get(iccid, []) if a.bundle == bundle]
        if not found:
            return self._response(404, {"message": "Bundle not found"}, {})
        pick = min if self.latest_is_oldest else max
        newest = pick(found, key=lambda a: a.assigned_at)
        if self.latest_shape == "assignment":
            return self._response(200, newest.wire(), {})
        body = {"name": bundle, "description": bundle, "assignments": [newest.wire()]}
        return self._response(200, body, {})

    def _revoke(
        self, iccid: str, bundle: str, assignment_id: str, kind: str | None
    ) -> httpx.Response:
        found = [
            a for a in self.esims.get(iccid, []) if a.id == assignment_id and a.bundle == bundle
        ]
        if not found:
            return self._response(404, {"message": "Assignment not found"}, {})
        if kind == "transaction":
            found[0].state = "revoked"
        return self._response(200, {"status": "Revoked"}, {})
