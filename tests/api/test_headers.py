"""Malformed headers on every route: a 4xx, never a 5xx, never a stack trace in the log.

Header values reach Starlette as latin-1 text, so whatever bytes a client may put in a
field (h11 refuses NUL, line breaks and whitespace at either end, nothing else) arrive in
`Authorization` (Bearer, or the Basic credentials of a raw SNS delivery), the SNS
headers, the dashboard cookie or any other header. Each example sends one request to
one route with a few such headers, some of them well-formed around a fuzzed part (a
valid key, the webhook's Basic credentials, a live session). An
API answer of 4xx carries the error envelope; a dashboard page answers with its HTML or
a redirect.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from starlette.routing import BaseRoute, Route

from api.app import create_app
from api.auth import Role
from api.dashboard import session as auth
from models.db import init_db
from tests.api.conftest import OPERATOR_KEY, Api, new_iccid, raw_delivery
from tests.api.helpers import offline_api, offline_settings

EXAMPLES_PER_ROUTE = 25
OTHER_HEADERS = [b"Accept", b"Accept-Encoding", b"Origin", b"Referer", b"X-Forwarded-Proto",
                 b"X-Forwarded-For", b"If-None-Match", b"Range"]  # fmt: skip
# What h11 lets through inside a field value: everything but NUL and whitespace, which
# may only separate other bytes (space and tab).
VCHAR = [bytes([b]) for b in range(1, 256) if b not in b"\t\n\x0b\x0c\r "]
SEPARATORS = [b",", b";", b"=", b" ", b"\t", b":", b'"', b"\\", b"/", b"%"]
FRAGMENTS = [b"Bearer", b"bearer", b"Basic", b"true", auth.COOKIE.encode(), b"\xe9", b"\xff"]
KINDS = {"json": b"application/json", "form": b"application/x-www-form-urlencoded"}


def _field(raw: bytes) -> bytes:
    return raw.strip(b" \t")


_bytes = st.lists(st.sampled_from(VCHAR + [b" ", b"\t"]), max_size=64).map(b"".join)
_latin1 = st.text(st.characters(min_codepoint=0x21, max_codepoint=0xFF), max_size=64).map(
    lambda text: text.encode("latin-1")
)
_utf8 = st.text(st.characters(min_codepoint=0x80, blacklist_categories=["Cs"]), max_size=32).map(
    str.encode
)
_odd = st.lists(st.sampled_from(SEPARATORS + FRAGMENTS), max_size=16).map(b"".join)
_long = st.tuples(st.integers(1_000, 6_000), st.sampled_from(VCHAR)).map(lambda p: p[1] * p[0])
VALUE = st.one_of(st.just(b""), _bytes, _latin1, _utf8, _odd, _long).map(_field)


@dataclass(frozen=True)
class Target:
    method: str
    path: str
    body: bytes
    kind: bytes  # the body's Content-Type, unless the example sends its own


def _routes(routes: list[BaseRoute]) -> Iterator[Route]:
    """The app's routes, those of included routers too."""
    for route in routes:
        if isinstance(route, Route):
            yield route
        elif (router := getattr(route, "original_router", None)) is not None:
            yield from _routes(router.routes)


def _targets(api: Api) -> list[Target]:
    """Every route of the app, its path filled in from the seeded data."""
    fill = {
        "{balance_id}": api.balance_id,
        "{iccid}": api.balance_iccid,
        "{action}": "pause",
    }
    bodies: dict[str, tuple[bytes, str]] = {
        "/v1/esims": (b'{"iccid": "%s", "carrier": "telna"}' % api.free_iccid.encode(), "json"),
        "/v1/balances": (
            b'{"iccid": "%s", "product_id": "telna-daily-1gb"}' % api.free_iccid.encode(),
            "json",
        ),
        "/v1/carriers/telna/events": (api.telna_event(), "json"),
        "/dashboard/signin": (b"api_key=" + OPERATOR_KEY.encode(), "form"),
        "/dashboard/balances/{balance_id}/{action}": (b"csrf=x&reason=fuzz", "form"),
    }
    found: list[Target] = []
    for route in _routes(create_app(api.settings).routes):
        path = route.path
        for name, value in fill.items():
            path = path.replace(name, value)
        for method in sorted(route.methods or ()):
            if method == "HEAD":
                continue
            body, kind = bodies.get(route.path, (b"{}", "json"))
            if method == "GET":
                body = b""
            found.append(Target(method, path, body, KINDS[kind]))
    return found


def _headers(api: Api, session_cookie: str) -> st.SearchStrategy[list[tuple[bytes, bytes]]]:
    """One or two credentials, well-formed around a fuzzed part or not at all, and up to
    three other headers."""
    basic = raw_delivery(api.telna_event())["Authorization"].encode()
    key = f"Bearer {OPERATOR_KEY}".encode()
    credentials: dict[bytes, st.SearchStrategy[bytes]] = {
        b"Authorization": st.one_of(
            VALUE,
            VALUE.map(lambda v: b"Bearer " + v),
            VALUE.map(lambda v: key + v),
            st.just(key),
            VALUE.map(lambda v: b"Basic " + v),
            VALUE.map(lambda v: basic + v),
            st.just(basic),
        ),
        b"Cookie": st.one_of(
            VALUE,
            VALUE.map(lambda v: auth.COOKIE.encode() + b"=" + v),
            VALUE.map(lambda v: session_cookie.encode() + v),
            VALUE.map(lambda v: session_cookie.encode() + b"; " + v),
        ),
    }
    others: dict[bytes, st.SearchStrategy[bytes]] = {
        b"Idempotency-Key": VALUE,
        b"x-amz-sns-rawdelivery": st.one_of(VALUE, st.just(b"true")),
        b"x-amz-sns-message-type": st.one_of(VALUE, st.just(b"Notification")),
        b"x-amz-sns-message-id": VALUE,
        b"Content-Type": st.one_of(
            VALUE,
            VALUE.map(lambda v: b"application/json; charset=" + v),
            VALUE.map(lambda v: b"application/x-www-form-urlencoded" + v),
        ),
        b"Host": VALUE,
        **dict.fromkeys(OTHER_HEADERS, VALUE),
    }

    def pick(
        shapes: dict[bytes, st.SearchStrategy[bytes]],
    ) -> st.SearchStrategy[tuple[bytes, bytes]]:
        return st.sampled_from(sorted(shapes)).flatmap(
            lambda name: shapes[name].map(lambda value: (name, _field(value)))
        )

    return st.tuples(
        st.lists(pick(credentials), min_size=1, max_size=2),
        st.lists(pick(others), max_size=3),
    ).map(lambda parts: parts[0] + parts[1])


def _check(target: Target, answer: httpx.Response, headers: list[tuple[bytes, bytes]]) -> None:
    where = f"{target.method} {target.path} {headers!r}"
    assert answer.status_code < 500, (where, answer.status_code, answer.text[:300])
    if answer.status_code < 400:
        return
    kind = answer.headers.get("content-type", "")
    if target.path.startswith("/v1/") or target.path in ("/metrics", "/healthz"):
        error = answer.json()["error"]
        assert isinstance(error["code"], str) and isinstance(error["message"], str), where
    elif target.path == "/" or target.path.startswith("/dashboard/"):
        assert kind.startswith("text/html"), (where, answer.status_code, kind)


class _Traces(logging.Handler):
    """Records logged with a stack trace, or at ERROR and above."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info or record.levelno >= logging.ERROR:
            self.seen.append(f"{record.name}: {record.getMessage()}")


@contextmanager
def _watching_logs() -> Iterator[_Traces]:
    handler = _Traces()
    # uvicorn's own loggers do not propagate to the root.
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.error"),
    ]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield handler
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def _sender(
    http: httpx.Client, target: Target, headers: st.SearchStrategy[list[tuple[bytes, bytes]]]
) -> Callable[[], None]:
    """A hypothesis test sending ``target`` with the headers drawn."""

    @settings(
        max_examples=EXAMPLES_PER_ROUTE,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(headers=headers)
    def send(headers: list[tuple[bytes, bytes]]) -> None:
        names = {name.lower() for name, _ in headers}
        sent = [] if b"content-type" in names else [(b"Content-Type", target.kind)]
        hosts = [h for h in headers if h[0] == b"Host"]
        sent += [h for h in headers if h[0] != b"Host"] + hosts[:1]  # a client sends one
        answer = http.request(target.method, target.path, headers=sent, content=target.body)
        _check(target, answer, headers)

    return send


def _fuzz(api: Api) -> tuple[list[str], list[str]]:
    """Fuzz every route; (one line per route that failed, what was logged as an error)."""
    cookie, _ = auth.issue(api.settings, Role.operator)
    headers = _headers(api, f"{auth.COOKIE}={cookie}")
    targets = _targets(api)
    assert len(targets) >= 20, targets
    failures: list[str] = []
    with httpx.Client(base_url=api.url, timeout=30) as http, _watching_logs() as traces:
        for target in targets:
            try:
                _sender(http, target, headers)()
            except Exception as error:  # reported all at once, below
                failures.append(f"{target.method} {target.path}: {error}")
    return failures, traces.seen


def _answers(url: str, method: str, path: str, headers: dict[str, bytes], body: bytes) -> Any:
    return httpx.request(method, f"{url}{path}", headers=headers, content=body, timeout=10)


def test_non_ascii_credentials_are_refused_without_a_stack_trace(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    init_db(settings.database_url)
    cookie, session = auth.issue(settings, Role.operator)
    body = Api.telna_event_for(new_iccid())
    raw = {k: v.encode() for k, v in raw_delivery(body).items()}
    forged = f"{auth.COOKIE}={cookie[:-1]}".encode() + "é".encode("latin-1")
    with offline_api(settings) as url, _watching_logs() as traces:
        for header in ("Bearer é".encode("latin-1"), "Bearer ключ".encode(), b"Bearer \xff"):
            answer = _answers(url, "GET", "/v1/balances", {"Authorization": header}, b"")
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"]["code"] == "unauthorized"
        for password in ("é".encode("latin-1") * 64, b"Basic " + "é".encode("latin-1") * 8):
            hook = raw | {"Authorization": raw["Authorization"][:-2] + password}
            answer = _answers(url, "POST", "/v1/carriers/telna/events", hook, body)
            assert answer.status_code == 401, answer.text
            assert answer.json()["error"] == {
                "code": "unauthorized",
                "message": "a raw delivery needs its Basic credentials",
            }
        for path in ("/", f"/dashboard/esims/{new_iccid()}"):
            answer = _answers(url, "GET", path, {"Cookie": forged}, b"")
            assert (answer.status_code, answer.headers["location"]) == (303, "/dashboard/signin")
        signed_in = {
            "Cookie": f"{auth.COOKIE}={cookie}".encode(),
            "Content-Type": b"application/x-www-form-urlencoded",
        }
        answer = _answers(
            url, "POST", "/dashboard/balances/bal_x/pause", signed_in, "csrf=é".encode()
        )
        assert answer.status_code == 403 and "text/html" in answer.headers["content-type"]
        assert auth.csrf_ok(settings, session, auth.csrf_token(settings, session))
    assert not traces.seen, traces.seen


async def test_no_header_value_makes_a_server_error_on_any_route(api: Api) -> None:
    failures, logged = await asyncio.to_thread(_fuzz, api)
    assert not failures, "\n\n".join(failures)
    assert not logged, "\n".join(logged[:20])
