"""Dashboard sign-in: an API key once, then a signed, HttpOnly, SameSite=Strict cookie.

A browser cannot send ``Authorization: Bearer`` on a plain link or form, so the
dashboard asks for the key once and answers with a cookie that holds the key's role,
its digest (``api.auth.identity_of``: what the API keeps per key, such as the limits on
actions that buy), an expiry and a random nonce, signed with HMAC-SHA256. The signing
key is derived from ``API_KEYS`` itself: there is no extra secret to configure, every
API process signs alike, and changing ``API_KEYS`` (revoking a key) ends every dashboard
session at once.
The key itself is never stored in the cookie.

Forms that change anything also carry a CSRF token (an HMAC of the session's nonce);
SameSite=Strict already keeps other sites' forms from sending the cookie, the token is
the second lock. The cookie is ``Secure`` when the request came over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from fastapi import Request, Response

from api.auth import OPERATE, Role
from config import Settings
from models.signature import equal

COOKIE = "esim_dashboard"
# One operator shift; after that the dashboard asks for the key again.
LIFETIME_SECONDS = 8 * 3600


@dataclass(frozen=True)
class DashboardSession:
    """A signed-in browser: the role of the key it presented, until ``expires``."""

    role: Role
    expires: int
    nonce: str
    identity: str = ""  # the key's digest

    @property
    def may_act(self) -> bool:
        return self.role in OPERATE

    @property
    def actor(self) -> str:
        """How the ledger names actions taken from the dashboard."""
        return f"dashboard:{self.role.value}"


def _signing_key(settings: Settings) -> bytes:
    keys = settings.api_keys.get_secret_value().encode()
    return hashlib.sha256(b"esim-balance dashboard session\x00" + keys).digest()


def _sign(settings: Settings, text: str) -> str:
    return hmac.new(_signing_key(settings), text.encode(), hashlib.sha256).hexdigest()


def issue(
    settings: Settings, role: Role, identity: str = "", now: float | None = None
) -> tuple[str, DashboardSession]:
    """A new session for a key of ``role`` whose digest is ``identity``: the cookie value
    and what it stands for."""
    expires = int((now if now is not None else time.time()) + LIFETIME_SECONDS)
    session = DashboardSession(role, expires, secrets.token_hex(16), identity)
    body = f"{role.value}.{identity}.{expires}.{session.nonce}"
    return f"{body}.{_sign(settings, body)}", session


def read(
    settings: Settings, value: str | None, now: float | None = None
) -> DashboardSession | None:
    """The session a cookie value stands for, or None if absent, forged or expired."""
    if not value or not settings.api_keys.get_secret_value():
        return None
    parts = value.split(".")
    if len(parts) != 5:
        return None
    role, identity, expires, nonce, signature = parts
    if not equal(signature, _sign(settings, f"{role}.{identity}.{expires}.{nonce}")):
        return None
    if role not in Role.__members__ or not expires.isdigit():
        return None
    if int(expires) < (now if now is not None else time.time()):
        return None
    return DashboardSession(Role(role), int(expires), nonce, identity)


def from_request(request: Request) -> DashboardSession | None:
    settings: Settings = request.app.state.settings
    return read(settings, request.cookies.get(COOKIE))


def csrf_token(settings: Settings, session: DashboardSession) -> str:
    """The token every state-changing form of this session carries."""
    return _sign(settings, f"csrf.{session.nonce}")[:32]


def csrf_ok(settings: Settings, session: DashboardSession, presented: str) -> bool:
    return equal(presented, csrf_token(settings, session))


def set_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=LIFETIME_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def clear_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
    )
