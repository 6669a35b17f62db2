"""Bearer keys with roles: compared in constant time, never logged, none by default."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from api.app import create_app
from api.auth import ApiKeys, Role
from tests.api.conftest import OPERATOR_KEY, SERVICE_KEY
from tests.api.helpers import offline_api, offline_settings

AUTHENTICATED = [
    ("GET", "/v1/products"),
    ("GET", "/v1/balances"),
    ("GET", "/v1/balances/bal_x"),
    ("GET", "/v1/esims/8944000000000000019"),
    ("GET", "/v1/continuity"),
    ("GET", "/v1/spend"),
    ("POST", "/v1/esims"),
    ("POST", "/v1/balances"),
    ("PATCH", "/v1/balances/bal_x"),
    ("POST", "/v1/balances/bal_x/pause"),
    ("POST", "/v1/balances/bal_x/resume"),
    ("POST", "/v1/balances/bal_x/cancel"),
    ("POST", "/v1/balances/bal_x/rotate"),
]


def test_keys_map_to_their_roles() -> None:
    keys = ApiKeys.parse(SecretStr(" operator:a-key , service:b:key,"))
    assert keys.role_of("a-key") is Role.operator
    assert keys.role_of("b:key") is Role.service
    assert keys.role_of("a-ke") is None
    assert keys.role_of("") is None


@pytest.mark.parametrize("value", ["operator", "admin:key", "operator:", ":key"])
def test_malformed_keys_are_refused_without_echoing_them(value: str) -> None:
    with pytest.raises(ValueError, match="entry 1") as error:
        ApiKeys.parse(SecretStr(value))
    assert "key" not in str(error.value).replace("role:key", "")


def test_no_keys_configured_accepts_nothing() -> None:
    keys = ApiKeys.parse(SecretStr(""))
    assert keys.role_of("") is None and keys.role_of("operator") is None


@pytest.mark.parametrize("bearer", [None, "", "operator", "service", "changeme", "operator:"])
def test_without_api_keys_every_authenticated_route_is_401(
    tmp_path: Path, bearer: str | None
) -> None:
    settings = offline_settings(tmp_path, api_keys=SecretStr(""))
    headers = {} if bearer is None else {"Authorization": f"Bearer {bearer}".strip()}
    with offline_api(settings) as url:
        for method, path in AUTHENTICATED:
            response = httpx.request(method, url + path, headers=headers, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["www-authenticate"] == "Bearer"


def test_keys_never_reach_the_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with offline_api(offline_settings(tmp_path)) as url:
        for key in (OPERATOR_KEY, SERVICE_KEY, "wrong-key-value"):
            headers = {"Authorization": f"Bearer {key}"}
            httpx.get(f"{url}/v1/products", headers=headers)
            httpx.post(f"{url}/v1/balances/bal_x/pause", headers=headers)
            httpx.post(f"{url}/v1/esims", headers=headers, content=b"{")
    assert caplog.records, "nothing was logged: the check would prove nothing"
    for key in (OPERATOR_KEY, SERVICE_KEY, "wrong-key-value"):
        assert key not in caplog.text


def test_a_malformed_api_keys_setting_stops_the_app(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="API_KEYS"):
        create_app(offline_settings(tmp_path, api_keys=SecretStr("root:secret-value")))
