"""Dashboard sessions: signed cookies that cannot be forged, stretched or carried over."""

from __future__ import annotations

from pydantic import SecretStr

from api.auth import Role
from api.dashboard import session as auth
from config import Settings

KEYS = SecretStr("operator:op-key,service:svc-key")


def test_a_cookie_reads_back_as_the_role_it_was_issued_for() -> None:
    settings = Settings(api_keys=KEYS)
    value, issued = auth.issue(settings, Role.service, "a" * 64, now=1000.0)
    read = auth.read(settings, value, now=1001.0)
    assert read == issued and read is not None and not read.may_act
    assert read.identity == "a" * 64


def test_a_cookie_with_another_role_key_or_expiry_is_refused() -> None:
    settings = Settings(api_keys=KEYS)
    value, _ = auth.issue(settings, Role.service, "a" * 64, now=1000.0)
    role, identity, expires, nonce, signature = value.split(".")
    forged = f"operator.{identity}.{expires}.{nonce}.{signature}"
    assert auth.read(settings, forged, now=1001.0) is None
    other = "b" * 64  # another key's digest: its limits are not this one's
    forged = f"{role}.{other}.{expires}.{nonce}.{signature}"
    assert auth.read(settings, forged, now=1001.0) is None
    later = int(expires) + 3600
    forged = f"{role}.{identity}.{later}.{nonce}.{signature}"
    assert auth.read(settings, forged, now=1001.0) is None
    assert auth.read(settings, "operator", now=1001.0) is None
    assert auth.read(settings, None) is None
    assert auth.read(settings, value, now=1001.0) is not None


def test_a_cookie_expires_and_dies_with_a_change_of_api_keys() -> None:
    settings = Settings(api_keys=KEYS)
    value, _ = auth.issue(settings, Role.operator, now=1000.0)
    assert auth.read(settings, value, now=1000.0 + auth.LIFETIME_SECONDS + 1) is None
    rotated = Settings(api_keys=SecretStr("operator:new-key"))
    assert auth.read(rotated, value, now=1001.0) is None
    assert auth.read(Settings(api_keys=SecretStr("")), value, now=1001.0) is None


def test_csrf_token_belongs_to_its_session() -> None:
    settings = Settings(api_keys=KEYS)
    _, one = auth.issue(settings, Role.operator)
    _, other = auth.issue(settings, Role.operator)
    token = auth.csrf_token(settings, one)
    assert auth.csrf_ok(settings, one, token)
    assert not auth.csrf_ok(settings, other, token)
    assert not auth.csrf_ok(settings, one, "")
