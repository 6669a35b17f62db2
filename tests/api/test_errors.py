"""One error shape for everything that goes wrong, and no internals in it."""

from __future__ import annotations

from pathlib import Path

import httpx

from api.app import create_app
from tests.api.conftest import Api, hold_line
from tests.api.helpers import NoTemporal, offline_api, offline_settings


def test_an_unexpected_exception_is_a_500_without_internals(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path)
    app = create_app(settings, client=NoTemporal())  # type: ignore[arg-type]

    async def boom() -> None:
        raise KeyError("secret-internal-detail")

    app.add_api_route("/boom", boom)
    with offline_api(settings, app) as url:
        response = httpx.get(f"{url}/boom")
        metrics = httpx.get(f"{url}/metrics").text
    assert response.status_code == 500
    assert response.json() == {"error": {"code": "internal_error", "message": "internal error"}}
    assert "secret-internal-detail" not in response.text
    assert 'route="/boom",status="500"' in metrics


def test_temporal_down_is_a_503_and_the_api_still_starts(tmp_path: Path) -> None:
    settings = offline_settings(tmp_path, temporal_address="127.0.0.1:1")
    with offline_api(settings, create_app(settings)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{url}/v1/products", headers=Api.auth()).status_code == 200
        # A usage alert of a line we hold: its signal is what needs Temporal.
        hold_line(settings.database_url, "8944000000000000019", "pkg-1")
        body = Api.telna_event_for("8944000000000000019", "pkg-1")
        response = httpx.post(
            f"{url}/v1/carriers/telna/events", content=body, headers=Api.raw(body)
        )
        metrics = httpx.get(f"{url}/metrics").text
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "temporal_unavailable"
    assert 'route="/v1/carriers/telna/events",status="503"' in metrics


def test_validation_errors_name_the_field(tmp_path: Path) -> None:
    with offline_api(offline_settings(tmp_path)) as url:
        response = httpx.post(
            f"{url}/v1/esims",
            json={"iccid": "8944000000000000018", "carrier": "telna"},
            headers=Api.auth("service"),
        )
    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "invalid_request",
        "message": "iccid: ICCID check digit (Luhn) is wrong",
    }


def test_method_not_allowed_says_which_are(tmp_path: Path) -> None:
    with offline_api(offline_settings(tmp_path)) as url:
        response = httpx.put(f"{url}/v1/esims", headers=Api.auth())
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert "POST" in response.headers["allow"]
