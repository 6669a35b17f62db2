"""Security checks of a running stack: every protected route refuses a caller without
valid credentials, and no secret shows in what the stack lets out.

:func:`probe_refusals` takes the routes from the live API's ``/openapi.json`` and, for
the routes left out of that document (the dashboard), from the app's own route table
(``api.app.create_app().routes``), so a route added later is probed without anyone
listing it. Only the routes in :data:`PUBLIC` are left alone, each for the reason given
there. What a refusal is, by kind of route:

- API routes (bearer key): 401 for no, a wrong or a malformed ``Authorization``, 403 for
  a read-only (``service``) key on an operator-only route; always the JSON error shape.
- Carrier webhooks (SNS): 401 for an envelope whose signature or certificate URL is not
  SNS's, and for a raw delivery without the webhook secret as its Basic password.
- Dashboard pages (GET): 303 (307 also accepted) to ``/dashboard/signin``.
- Dashboard actions (POST forms): 401 without a valid session, 403 for a missing or
  foreign CSRF token or a read-only session.

Path parameters are made-up identifiers of the right shape (a Luhn-valid ICCID, a
``bal_`` id): were a route to let a request through, it would answer 404/409/422 — a
problem all the same — without acting on a real balance of the fleet under test. No
request carries a secret where the API might log it (never in a URL).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import secrets
import time
import urllib.request
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from http.cookiejar import Cookie, CookieJar, DefaultCookiePolicy
from typing import Any, get_args
from urllib.parse import quote, quote_plus

import httpx
from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.routing import iter_route_contexts
from pydantic import SecretStr
from temporalio.client import Client

from api import deps
from api.app import create_app
from api.auth import Role
from api.dashboard import routes as dashboard
from api.dashboard import session as dashboard_session
from config import Settings
from models.identifiers import make_iccid

# Routes anyone may call, and why. An entry the app no longer has is reported, so the
# list cannot silently outlive the routes it excuses.
PUBLIC: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness for probes; answers only {status: ok}",
    ("GET", "/metrics"): (
        "Prometheus scrape target, keyless by design (README: for probes and scrapers); "
        "labels are route templates, states and outcomes, never an id"
    ),
    ("GET", "/openapi.json"): "the API's description (DESIGN 7: OpenAPI at /docs), no data",
    ("GET", "/docs"): "documentation page over /openapi.json",
    ("GET", "/docs/oauth2-redirect"): "part of the documentation page",
    ("GET", "/redoc"): "documentation page over /openapi.json",
    ("GET", "/dashboard/signin"): "the sign-in form itself",
    ("POST", "/dashboard/signout"): "only clears the caller's own cookie",
}
# Authenticated by the carrier's means (SNS signatures, Basic credentials), not by a key.
SIGNED = frozenset({("POST", "/v1/carriers/telna/events")})
# The credential exchange: probed with a wrong key (401, and no cookie).
SIGN_IN = ("POST", "/dashboard/signin")
SIGN_IN_PATH = SIGN_IN[1]

PROBE_ICCID = make_iccid("894400000000031337")
PROBE_BALANCE_ID = "bal_5ecc0de0b0e5"
# Values for path parameters; a parameter with several is probed with each.
PATH_VALUES: dict[str, tuple[str, ...]] = {
    "iccid": (PROBE_ICCID,),
    "balance_id": (PROBE_BALANCE_ID,),
    "action": tuple(dashboard.ACTIONS),
}
HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"})
REFUSED = frozenset({401, 403})
TO_SIGN_IN = frozenset({303, 307})
CONCURRENCY = 8  # requests in flight at once
RETRY_SECONDS = 15.0  # how long a request is retried while the API does not answer
MIN_SECRET_LENGTH = 8


@dataclass
class Probe:
    """What :func:`probe_refusals` sent and saw."""

    requests: int = 0
    refusals: int = 0
    routes: list[str] = field(default_factory=list)
    """Every route and method covered, with its kind (``bearer``, ``signed``, ...)."""
    problems: list[str] = field(default_factory=list)
    """One readable line per request that was not refused (never a response body)."""
    bodies: list[str] = field(default_factory=list)
    """Every response body received, for :func:`find_secrets`."""
    skipped: list[str] = field(default_factory=list)
    """Probes left out for want of an input (e.g. no read-only key)."""

    def texts(self) -> dict[str, str]:
        """The bodies named for :func:`find_secrets`."""
        return {f"response body {n}": body for n, body in enumerate(self.bodies, start=1)}


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    operator_only: bool = False

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def urls(self) -> Iterator[str]:
        """The path with each combination of probe values for its parameters."""
        names = [part[1:-1] for part in self.path.split("/") if part.startswith("{")]
        for values in itertools.product(*(PATH_VALUES.get(n, ("probe-1",)) for n in names)):
            url = self.path
            for name, value in zip(names, values, strict=True):
                url = url.replace("{" + name + "}", quote(value, safe=""))
            yield url


@dataclass(frozen=True)
class Request:
    case: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | None = None


async def probe_refusals(
    api_url: str,
    *,
    valid_key: str,
    telna_webhook_secret: str,
    api_keys: str | None = None,
) -> Probe:
    """Send every protected route requests without valid credentials; see the module.

    ``valid_key`` is an operator key: the probe checks it is accepted (else the wrong-key
    probes would prove nothing) and signs in to the dashboard with it. ``api_keys`` (the
    API's ``API_KEYS``) adds the read-only role's probes: a ``service`` key on
    operator-only routes, and a ``service`` dashboard session with its valid CSRF token.
    """
    # Requests run concurrently: none may pick up a cookie another one was given.
    jar = CookieJar(policy=_NoCookies())
    async with httpx.AsyncClient(base_url=api_url, timeout=20, cookies=jar) as http:
        prober = _Prober(http, valid_key, telna_webhook_secret, api_keys)
        await prober.run()
        return prober.probe


class _NoCookies(DefaultCookiePolicy):
    def set_ok(self, cookie: Cookie, request: urllib.request.Request) -> bool:
        return False


def app_routes() -> tuple[list[Route], list[Route]]:
    """(routes in the OpenAPI document, routes left out of it) of ``create_app()``,
    HEAD left out; operator-only routes marked from their dependencies."""
    app = create_app(Settings.model_construct(api_keys=SecretStr("")))
    shown: list[Route] = []
    hidden: list[Route] = []
    for context in iter_route_contexts(app.routes):
        dependant: Dependant | None = getattr(context, "dependant", None)
        only = dependant is not None and _OPERATOR in _calls(dependant)
        for method in sorted((context.methods or set()) - {"HEAD"}):
            route = Route(method, str(context.path), only)
            (shown if getattr(context, "include_in_schema", True) else hidden).append(route)
    return shown, hidden


_OPERATOR = next(a for a in get_args(deps.OperatorDep) if isinstance(a, params.Depends)).dependency


def _calls(dependant: Dependant) -> set[Any]:
    found: set[Any] = set()
    stack = [dependant]
    while stack:
        node = stack.pop()
        found.add(node.call)
        stack.extend(node.dependencies)
    return found


class _Prober:
    def __init__(self, http: httpx.AsyncClient, key: str, secret: str, api_keys: str | None):
        self.http, self.key, self.secret = http, key, secret
        self.probe = Probe()
        self.read_only_keys = [k for r, k in _entries(api_keys or "") if r != Role.operator]
        self.settings = Settings.model_construct(api_keys=SecretStr(api_keys or ""))
        self.operator_cookie: str | None = None
        self.read_only_cookie: str | None = None

    async def run(self) -> None:
        live = await self._send(Route("GET", "/openapi.json"), Request("control"))
        if live is None or live.status_code != 200:
            self.probe.problems.append("GET /openapi.json: no OpenAPI document; nothing probed")
            return
        shown, hidden = app_routes()
        operator_only = {(r.method, r.path) for r in shown + hidden if r.operator_only}
        documented = [
            Route(method.upper(), path, (method.upper(), path) in operator_only)
            for path, operations in live.json()["paths"].items()
            for method in operations
            if method.upper() in HTTP_METHODS
        ]
        every = {(r.method, r.path) for r in documented + hidden}
        for method, path in sorted(set(PUBLIC) - every):
            self.probe.problems.append(f"{method} {path}: allow-listed as public but not served")
        await self._controls()
        sends: list[Awaitable[object]] = []
        for route in documented + hidden:
            sends += self._probe_route(route, in_schema=route in documented)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def gated(send: Awaitable[object]) -> None:
            async with gate:
                await send

        await asyncio.gather(*(gated(send) for send in sends))

    def _probe_route(self, route: Route, *, in_schema: bool) -> list[Awaitable[object]]:
        """The requests to send ``route`` (not yet sent)."""
        where = (route.method, route.path)
        sends: list[Awaitable[object]] = []
        if where in PUBLIC:
            if route.method == "GET":
                sends.append(self._send(route, Request("public")))  # its body is scanned
            self.probe.routes.append(f"{route} (public)")
        elif where == SIGN_IN:
            self.probe.routes.append(f"{route} (sign-in)")
            sends.append(self._sign_in_refused(route))
        elif where in SIGNED:
            self.probe.routes.append(f"{route} (signed)")
            for request in self._webhook_requests():
                sends.append(self._expect(route, route.path, request, REFUSED, api=True))
        elif in_schema:
            self.probe.routes.append(
                f"{route} (bearer{', operator only' if route.operator_only else ''})"
            )
            for url in route.urls():
                for request in self._bearer_requests(route):
                    sends.append(self._expect(route, url, request, REFUSED, api=True))
        elif route.method == "GET":
            self.probe.routes.append(f"{route} (dashboard page)")
            for url in route.urls():
                for request in self._page_requests():
                    sends.append(self._expect(route, url, request, TO_SIGN_IN | REFUSED, api=False))
        else:
            self.probe.routes.append(f"{route} (dashboard action)")
            for url in route.urls():
                for request in self._action_requests():
                    sends.append(self._expect(route, url, request, REFUSED, api=False))
        return sends

    # -- the requests --------------------------------------------------------------

    def _bearer_requests(self, route: Route) -> Iterator[Request]:
        body = b"{}" if route.method in {"POST", "PUT", "PATCH"} else None
        key = self.key
        basic = base64.b64encode(f"operator:{key}".encode()).decode()
        cases = {
            "no credentials": {},
            "wrong bearer key": {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"},
            "key without the Bearer scheme": {"Authorization": key},
            "key as Basic credentials": {"Authorization": f"Basic {basic}"},
            "Bearer without a key": {"Authorization": "Bearer"},
            "truncated key": {"Authorization": f"Bearer {key[:-1]}"},
            "key with a suffix": {"Authorization": f"Bearer {key}x"},
            "key twice": {"Authorization": f"Bearer {key} {key}"},
            "key in another header": {"X-API-Key": key},
        }
        for case, headers in cases.items():
            yield Request(case, _json(headers) if body else headers, body)
        if route.operator_only:
            for n, other in enumerate(self.read_only_keys, start=1):
                headers = {"Authorization": f"Bearer {other}"}
                yield Request(f"read-only key {n}", _json(headers) if body else headers, body)

    def _webhook_requests(self) -> Iterator[Request]:
        """Raw deliveries without the secret, and envelopes SNS did not sign. None names
        an allowed certificate URL: the API would then fetch from AWS."""
        body = _telna_event()
        raw = _raw_delivery(self.secret)
        cases = {
            "raw delivery without credentials": _without(raw, "Authorization"),
            "raw delivery under another secret": _raw_delivery(secrets.token_hex(16)),
            "raw delivery with the secret as user name": raw
            | {"Authorization": _basic(f"{self.secret}:")},
            "bearer key instead of credentials": raw | _bearer(self.key),
        }
        for case, headers in cases.items():
            yield Request(case, headers, body)
        envelope = {
            "Type": "Notification",
            "MessageId": secrets.token_hex(8),
            "TopicArn": "arn:aws:sns:eu-west-1:000000000000:telna",
            "Message": body.decode(),
            "Timestamp": "2030-01-01T00:00:00.000Z",
            "SignatureVersion": "2",
            "Signature": base64.b64encode(secrets.token_bytes(256)).decode(),
            "SigningCertURL": "https://sns.eu-west-1.amazonaws.com.probe.invalid/c.pem",
        }
        sns = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"}
        for case, sent in {
            "envelope with a certificate off the allow-list": envelope,
            "envelope of an unknown signature version": envelope | {"SignatureVersion": "9"},
        }.items():
            yield Request(case, sns, json.dumps(sent).encode())

    def _page_requests(self) -> Iterator[Request]:
        yield Request("no cookie")
        yield Request("forged cookie", _cookie(_forged_cookie()))
        yield Request("cookie signed under other keys", _cookie(_foreign_session()[0]))
        yield Request("bearer key instead of a cookie", {"Authorization": f"Bearer {self.key}"})
        yield Request("API key as the cookie", _cookie(self.key))
        if self.read_only_cookie:
            yield Request("tampered role", _cookie(_as_operator(self.read_only_cookie)))

    def _action_requests(self) -> Iterator[Request]:
        foreign, foreign_csrf = _foreign_session()
        yield Request("no cookie", _FORM, _form(csrf="x"))
        yield Request("forged cookie", _form_cookie(_forged_cookie()), _form(csrf="x"))
        yield Request(
            "cookie signed under other keys", _form_cookie(foreign), _form(csrf=foreign_csrf)
        )
        yield Request(
            "bearer key instead of a cookie",
            _FORM | {"Authorization": f"Bearer {self.key}"},
            _form(csrf="x"),
        )
        if self.operator_cookie:
            session = _form_cookie(self.operator_cookie)
            yield Request("operator session, no CSRF token", session, _form())
            yield Request(
                "operator session, wrong CSRF token", session, _form(csrf=secrets.token_hex(16))
            )
            yield Request(
                "operator session, another session's token", session, _form(csrf=foreign_csrf)
            )
            token = self._csrf(self.operator_cookie)
            if token:
                as_json = _json(_cookie(self.operator_cookie))
                yield Request(
                    "operator session, token sent as JSON",
                    as_json,
                    json.dumps({"csrf": token}).encode(),
                )
        if self.read_only_cookie:
            token = self._csrf(self.read_only_cookie)
            if token:
                yield Request(
                    "read-only session", _form_cookie(self.read_only_cookie), _form(csrf=token)
                )
            tampered = _form_cookie(_as_operator(self.read_only_cookie))
            yield Request("tampered role", tampered, _form(csrf=token or "x"))

    # -- controls: the probe's own inputs work, so its refusals mean something ------

    async def _controls(self) -> None:
        ok = await self._send(Route("GET", "/v1/products"), Request("control", _bearer(self.key)))
        if ok is not None and ok.status_code != 200:
            self.probe.problems.append(
                f"control: the valid key was not accepted ({ok.status_code}); "
                "the wrong-key probes prove nothing"
            )
        signed = self._signed_probe_body()
        hook = next(iter(SIGNED))
        answer = await self._send(Route(*hook), signed)
        if answer is not None and answer.status_code != 400:
            self.probe.problems.append(
                f"control: a raw delivery with the given webhook secret answered "
                f"{answer.status_code}, not 400 invalid_event; the webhook probes prove little"
            )
        self.operator_cookie = await self._sign_in(self.key)
        if self.operator_cookie is None:
            self.probe.problems.append(
                "control: could not sign in to the dashboard with the valid key"
            )
        if self.read_only_keys:
            self.read_only_cookie = await self._sign_in(self.read_only_keys[0])
        else:
            self.probe.skipped.append("read-only key and session probes (no api_keys given)")

    def _signed_probe_body(self) -> Request:
        """A raw delivery with the secret but no event: passes the credentials, then
        answers 400."""
        return Request("control", _raw_delivery(self.secret), b"{}")

    async def _sign_in(self, key: str) -> str | None:
        route = Route(*SIGN_IN)
        answer = await self._send(route, Request("control", _FORM, _form(api_key=key)))
        if answer is None or answer.status_code != 303:
            return None
        return answer.cookies.get(dashboard_session.COOKIE)

    async def _sign_in_refused(self, route: Route) -> None:
        request = Request("wrong key", _FORM, _form(api_key=secrets.token_urlsafe(24)))
        answer = await self._expect(route, route.path, request, REFUSED, api=False)
        if answer is not None and dashboard_session.COOKIE in answer.cookies:
            self.probe.problems.append(f"{route} [wrong key]: set a session cookie")

    def _csrf(self, cookie: str) -> str | None:
        """The session's CSRF token, computable only with ``api_keys``."""
        session = dashboard_session.read(self.settings, cookie)
        return dashboard_session.csrf_token(self.settings, session) if session else None

    # -- sending -------------------------------------------------------------------

    async def _expect(
        self, route: Route, url: str, request: Request, allowed: frozenset[int], *, api: bool
    ) -> httpx.Response | None:
        answer = await self._send(Route(route.method, url), request)
        if answer is None:
            return None
        status = answer.status_code
        location = answer.headers.get("location", "")
        if status in TO_SIGN_IN and not location.endswith(SIGN_IN_PATH):
            status = -status  # a redirect elsewhere is no refusal
        problem = None
        if status not in allowed:
            problem = f"answered {answer.status_code} {_code(answer)}".rstrip()
        elif api and _code(answer) == "":
            problem = f"refused {status} without the error shape"
        if problem is None:
            self.probe.refusals += 1
        else:
            shown = f" ({url})" if url != route.path else ""
            self.probe.problems.append(f"{route}{shown} [{request.case}]: {problem}")
        return answer

    async def _send(self, route: Route, request: Request) -> httpx.Response | None:
        deadline = time.monotonic() + RETRY_SECONDS
        while True:
            try:
                answer = await self.http.request(
                    route.method, route.path, headers=dict(request.headers), content=request.content
                )
            except httpx.TransportError as error:  # the API restarting: try again
                if time.monotonic() > deadline:
                    self.probe.problems.append(
                        f"{route} [{request.case}]: no answer ({type(error).__name__})"
                    )
                    return None
                await asyncio.sleep(0.5)
                continue
            self.probe.requests += 1
            self.probe.bodies.append(answer.text)
            return answer


_FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def _form(**fields: str) -> bytes:
    return "&".join(f"{k}={quote_plus(v)}" for k, v in fields.items()).encode()


def _json(headers: Mapping[str, str]) -> dict[str, str]:
    return {"Content-Type": "application/json", **headers}


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _cookie(value: str) -> dict[str, str]:
    return {"Cookie": f"{dashboard_session.COOKIE}={value}"}


def _form_cookie(value: str) -> dict[str, str]:
    return _FORM | _cookie(value)


def _forged_cookie() -> str:
    expires = int(time.time()) + 3600
    return f"operator.{expires}.{secrets.token_hex(16)}.{secrets.token_hex(32)}"


def _foreign_session() -> tuple[str, str]:
    """A genuine operator cookie and its CSRF token, signed under keys the API lacks."""
    other = Settings.model_construct(api_keys=SecretStr(f"operator:{secrets.token_hex(16)}"))
    value, session = dashboard_session.issue(other, Role.operator)
    return value, dashboard_session.csrf_token(other, session)


def _as_operator(cookie: str) -> str:
    """The cookie claiming the operator role under its own signature."""
    role, _, rest = cookie.partition(".")
    return f"{Role.operator.value if role != Role.operator.value else Role.service.value}.{rest}"


def _entries(api_keys: str) -> Iterator[tuple[str, str]]:
    """(role, key) of each ``role:key`` entry of an ``API_KEYS`` value."""
    for entry in api_keys.split(","):
        role, sep, key = entry.strip().partition(":")
        if sep and key.strip():
            yield role.strip(), key.strip()


def _telna_event() -> bytes:
    """A plausible usage alert for a package of the probe's ICCID."""
    event = {
        "eventName": "PACKAGE_DATA_USAGE_ALERT",
        "eventTimestamp": int(time.time() * 1000),
        "eventDetails": {
            "sim": {"iccid": PROBE_ICCID},
            "package": {"id": "pkg-probe", "packageUsedBytes": 800_000},
        },
    }
    return json.dumps(event).encode()


def _basic(credentials: str) -> str:
    return "Basic " + base64.b64encode(credentials.encode()).decode()


def _raw_delivery(secret: str) -> dict[str, str]:
    """Headers of an SNS raw delivery whose subscription URL carries ``secret``."""
    return {
        "Content-Type": "text/plain; charset=UTF-8",
        "x-amz-sns-message-type": "Notification",
        "x-amz-sns-message-id": secrets.token_hex(8),
        "x-amz-sns-rawdelivery": "true",
        "Authorization": _basic(f"telna:{secret}"),
    }


def _without(headers: Mapping[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


def _code(answer: httpx.Response) -> str:
    """The error code of a JSON error answer, or ""."""
    try:
        body = answer.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str) and "message" in error:
        return str(error["code"])
    return ""


# -- secrets -----------------------------------------------------------------------


def find_secrets(secrets: Mapping[str, str], texts: Mapping[str, str]) -> list[str]:
    """One line per (text, secret) found: the text's name, the secret's NAME and how it
    was written; never the value. Secrets shorter than 8 characters are ignored.

    Beside the value as is: URL- and form-encoded, base64 (standard and URL-safe, also
    inside a longer base64 text, so ``Basic`` credentials and encoded payloads count),
    each key of an ``API_KEYS``-style ``role:key,...`` value, and ``user:password`` of
    every ``X_USERNAME`` / ``X_PASSWORD`` pair (Webbing's account)."""
    needles = [
        (name, how, needle)
        for name, value in _secret_values(secrets)
        for how, needle in _encodings(value)
        if len(needle) >= MIN_SECRET_LENGTH
    ]
    findings: list[str] = []
    for text_name, text in texts.items():
        found: dict[str, list[str]] = {}
        for name, how, needle in needles:
            if needle in text and how not in found.get(name, []):
                found.setdefault(name, []).append(how)
        findings.extend(f"{text_name}: {name} ({', '.join(hows)})" for name, hows in found.items())
    return findings


def _secret_values(secrets: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    for name, value in sorted(secrets.items()):
        if len(value) < MIN_SECRET_LENGTH:
            continue
        yield name, value
        if name.endswith("API_KEYS"):
            for role, key in _entries(value):
                if len(key) >= MIN_SECRET_LENGTH:
                    yield f"{name} ({role} key)", key
        if name.endswith("USERNAME") and (password := secrets.get(name[:-8] + "PASSWORD")):
            yield f"{name}:{name[:-8]}PASSWORD", f"{value}:{password}"


def _encodings(value: str) -> Iterator[tuple[str, str]]:
    yield "as is", value
    for how, encoded in (
        ("URL-encoded", quote(value, safe="")),
        ("form-encoded", quote_plus(value)),
    ):
        if encoded != value:
            yield how, encoded
    raw = value.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        yield "base64", encode(raw).decode()
        # The same bytes at another offset of a longer text: the characters that
        # depend only on them (leading ones mix with what precedes, the last group
        # with what follows).
        for offset, skip in ((1, 2), (2, 3)):
            yield "base64", encode(bytes(offset) + raw).decode()[skip:-4]
        yield "base64", encode(raw).decode()[:-4]


# -- search attributes -------------------------------------------------------------


async def search_attribute_texts(client: Client, query: str) -> dict[str, str]:
    """Every matching workflow's search attributes as text (``Key=value`` lines, one
    block per run), keyed by workflow id."""
    texts: dict[str, str] = {}
    async for execution in client.list_workflows(query):
        pairs = execution.typed_search_attributes.search_attributes
        lines = [f"run {execution.run_id}"]
        lines += [f"{pair.key.name}={pair.value}" for pair in pairs]
        earlier = texts.get(execution.id)
        texts[execution.id] = "\n".join(([earlier] if earlier else []) + lines)
    return texts
