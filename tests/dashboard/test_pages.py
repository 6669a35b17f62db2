"""The dashboard's pages over HTTP without a browser: who gets in, and bad input."""

from __future__ import annotations

from pathlib import Path

import httpx
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.dashboard import session as auth
from config import Settings
from models.db import init_db
from models.identifiers import make_iccid
from tests.servers import serve

OPERATOR_KEY = "dash-operator-key"
SERVICE_KEY = "dash-service-key"


def _settings(tmp: Path) -> Settings:
    url = f"sqlite:///{tmp / 'dash.db'}"
    init_db(url)
    keys = SecretStr(f"operator:{OPERATOR_KEY},service:{SERVICE_KEY}")
    return Settings(database_url=url, api_keys=keys)


async def _signed_in(http: httpx.AsyncClient, key: str) -> str:
    """Signs in; returns the fleet page."""
    answer = await http.post("/dashboard/signin", data={"api_key": key})
    assert answer.status_code == 303 and answer.headers["location"] == "/"
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie
    page = await http.get("/")
    assert page.status_code == 200 and "Content-Security-Policy" in page.headers
    return page.text


async def test_pages_need_a_session_and_refuse_bad_input(
    dev_env: WorkflowEnvironment, tmp_path: Path
) -> None:
    settings = _settings(tmp_path)
    with serve(create_app(settings, client=dev_env.client)) as url:
        async with httpx.AsyncClient(base_url=url) as http:
            for path in ("/", f"/dashboard/esims/{make_iccid('894400000000000001')}"):
                answer = await http.get(path)
                assert answer.status_code == 303, path
                assert answer.headers["location"] == "/dashboard/signin"
            refused = await http.post("/dashboard/signin", data={"api_key": "nope"})
            assert refused.status_code == 401 and "API key not accepted" in refused.text
            assert "set-cookie" not in refused.headers
        forged_cookie = {auth.COOKIE: "operator.9999999999.a.b"}
        async with httpx.AsyncClient(base_url=url, cookies=forged_cookie) as forger:
            assert (await forger.get("/")).status_code == 303
        async with httpx.AsyncClient(base_url=url) as http:
            schema = (await http.get("/openapi.json")).json()
            assert not any(p == "/" or p.startswith("/dashboard") for p in schema["paths"])

        async with httpx.AsyncClient(base_url=url) as http:
            await _signed_in(http, SERVICE_KEY)
            assert (await http.get("/?state=Sleeping")).status_code == 422
            assert (await http.get("/dashboard/esims/123")).status_code == 422
            unknown = await http.get(f"/dashboard/esims/{make_iccid('894400000000000002')}")
            assert unknown.status_code == 404 and "no eSIM" in unknown.text
            no_token = await http.post("/dashboard/balances/bal_x/pause", data={})
            assert no_token.status_code == 403

        async with httpx.AsyncClient(base_url=url) as http:
            await _signed_in(http, OPERATOR_KEY)
            session = auth.read(settings, http.cookies.get(auth.COOKIE))
            assert session is not None and session.may_act
            csrf = auth.csrf_token(settings, session)
            gone = await http.post("/dashboard/balances/bal_x/pause", data={"csrf": csrf})
            assert gone.status_code == 404 and "no balance bal_x" in gone.text
            odd = await http.post("/dashboard/balances/bal_x/explode", data={"csrf": csrf})
            assert odd.status_code == 404
