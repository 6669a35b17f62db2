"""With a control token, a simulator's ``/_sim`` answers only to it; its carrier API is
unchanged. Without one (``make run``, the tests), ``/_sim`` stays open."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from models.identifiers import make_iccid
from simulators import esimgo, telna, webbing
from tests.servers import serve

TOKEN = "control-test-token"
TELNA_KEY = "sim-test-key"
WEBBING = ("sim-user", "sim-password", "sim-wskey")
# Every /_sim route of both simulators, and one that does not exist.
CONTROL = [
    ("POST", "/_sim/esims", {"iccids": ["89440000000000000019"]}),
    ("POST", "/_sim/traffic", {"bytes_per_second": 10}),
    ("POST", "/_sim/faults", {"error_rate": 1}),
    ("GET", "/_sim/faults", None),
    ("GET", "/_sim/ledger", None),
    ("GET", "/_sim/timeline/89440000000000000019", None),
    ("GET", "/_sim/products", None),
    ("GET", "/_sim/packages", None),
    ("POST", "/_sim/config", {"activation_latency_min_seconds": 0}),
    ("GET", "/_sim/nothing-here", None),
    ("GET", "/_sim", None),
]


@pytest.fixture(scope="module", params=["telna", "webbing", "esimgo"])
def guarded(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    if request.param == "telna":
        app = telna.create_app(TELNA_KEY, "secret", seed=1, control_token=TOKEN)
    elif request.param == "esimgo":
        app = esimgo.create_app(TELNA_KEY, seed=1, control_token=TOKEN)
    else:
        app = webbing.create_app(*WEBBING, seed=1, control_token=TOKEN)
    with serve(app) as url:
        yield request.param, url


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", TOKEN, f"Basic {TOKEN}"])
async def test_the_control_api_refuses_anyone_without_the_token(
    guarded: tuple[str, str], authorization: str | None
) -> None:
    _, url = guarded
    headers = {"Authorization": authorization} if authorization else {}
    routes = [
        *CONTROL,
        ("GET", "/_sim/usage-lag", None),
        ("GET", "/_sim/esimgo", None),
        ("POST", "/_sim/esimgo/installed", {"iccids": ["89440000000000000019"]}),
    ]
    async with httpx.AsyncClient(base_url=url, headers=headers) as client:
        for method, path, body in routes:
            response = await client.request(method, path, json=body)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]["code"] == "unauthorized"
            assert response.headers["WWW-Authenticate"] == "Bearer"
        # Nothing took effect: no fault is in force.
        ok = await client.get("/_sim/faults", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200 and ok.json()["error_rate"] is None


async def test_the_token_opens_the_control_api_and_the_carrier_api_is_as_before(
    guarded: tuple[str, str],
) -> None:
    carrier, url = guarded
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as control:
        assert (await control.get("/_sim/products")).status_code == 200
        added = await control.post(
            "/_sim/esims", json={"iccids": [make_iccid("894400000000000002")]}
        )
        assert added.status_code == 200
    async with httpx.AsyncClient(base_url=url) as api:
        if carrier == "telna":
            answer = await api.get(
                "/v2.1/pcr/package-templates", headers={"Authorization": TELNA_KEY}
            )
            assert answer.status_code == 200 and answer.json()["package_templates"]
        elif carrier == "esimgo":
            answer = await api.get("/v2.4/catalogue", headers={"X-API-Key": TELNA_KEY})
            assert answer.status_code == 200 and answer.json()["bundles"]
        else:
            answer = await api.post("/accounts/Accounts.asmx", content=b"<not-soap/>")
            assert answer.status_code != 401  # the service's own answer, not the guard's


async def test_without_a_token_the_control_api_is_open() -> None:
    with serve(telna.create_app(TELNA_KEY, "secret", seed=1)) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            assert (await client.get("/_sim/products")).status_code == 200
