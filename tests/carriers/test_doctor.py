"""The carrier doctor against the simulators as shipped, against simulators that
contradict the clients' choices, and failing with one line when it cannot run."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from carriers import doctor_esimgo, doctor_telna, doctor_webbing
from carriers.base import CarrierLine
from carriers.doctor import main
from carriers.esimgo import EsimGoCarrier
from carriers.telna import NOT_PUBLIC, RECORD_READINGS
from carriers.webbing import WIRE, WebbingCarrier
from carriers.webbing_soap import SOAP_NS, WWS_NS
from config import Settings, TelnaSettings, WebbingSettings
from models.identifiers import make_iccid
from ports import free_port
from simulators import telna_api
from simulators.esimgo import create_app as create_esimgo
from simulators.telna import create_app as create_telna
from simulators.webbing import create_app as create_webbing
from tests.servers import serve

ROOT = Path(__file__).resolve().parents[2]
KEY = "doctor-key"
USERNAME, PASSWORD, WSKEY = "doctor-user", "doctor-password", "doctor-wskey"
ICCID = make_iccid("894400000077000001")
SUSPENDED = make_iccid("894400000077000002")


@pytest.fixture(scope="module")
def telna_url() -> Iterator[str]:
    """A Telna simulator as shipped, with one eSIM carrying one package."""
    with serve(create_telna(KEY, "secret", seed=3)) as url:
        httpx.post(f"{url}/_sim/esims", json={"iccids": [ICCID]}).raise_for_status()
        body = {"sim": ICCID, "package_template": "daily-1gb"}
        auth = {"Authorization": KEY}
        httpx.post(f"{url}/v2.1/pcr/packages", json=body, headers=auth).raise_for_status()
        yield url


@pytest.fixture(scope="module")
def webbing_url() -> Iterator[str]:
    """A Webbing simulator as shipped (changes in effect at once), with one device on a
    product and one suspended."""
    app = create_webbing(USERNAME, PASSWORD, WSKEY, seed=3, activation_latency=(0.0, 0.0))
    with serve(app) as url:
        httpx.post(f"{url}/_sim/esims", json={"iccids": [ICCID, SUSPENDED]}).raise_for_status()

        async def in_effect(carrier: WebbingCarrier, iccid: str) -> CarrierLine:
            await carrier.order(iccid, "1042", "doctor:1")
            for _ in range(100):
                found = await carrier.find_lines(iccid)
                if found and found[0].status == "active":
                    return found[0]
                await asyncio.sleep(0.05)
            raise AssertionError(f"no product took effect on {iccid}")

        async def setup() -> None:
            carrier = WebbingCarrier(url, USERNAME, PASSWORD, WSKEY)
            await in_effect(carrier, ICCID)
            await carrier.deactivate((await in_effect(carrier, SUSPENDED)).line_id)
            await carrier.aclose()

        asyncio.run(setup())
        yield url


@pytest.fixture
def esimgo_url() -> Iterator[str]:
    """An eSIM Go simulator as shipped, with one eSIM: a day bundle in use, one queued."""
    with serve(create_esimgo(KEY, None, seed=3, activation_latency=(0.0, 0.0))) as url:
        httpx.post(f"{url}/_sim/esims", json={"iccids": [ICCID]}).raise_for_status()

        async def setup() -> None:
            carrier = EsimGoCarrier(f"{url}/v2.4", KEY)
            for _ in range(2):
                await carrier.order(ICCID, "esim_1GB_1D_GB_V2", "doctor:1")
            await carrier.aclose()

        asyncio.run(setup())
        traffic = {"iccid": ICCID, "bytes_per_second": 1_000_000}
        httpx.post(f"{url}/_sim/traffic", json=traffic).raise_for_status()
        for _ in range(100):  # the first bundle started: the eSIM was installed
            if any(e["action"] == "activate" for e in ledger(url)):
                break
            time.sleep(0.05)
        yield url


def telna_settings(url: str, **options: str) -> Settings:
    return Settings(telna=TelnaSettings(base_url=url, api_key=SecretStr(KEY), **options))


def webbing_settings(url: str) -> Settings:
    secrets = {"password": SecretStr(PASSWORD), "wskey": SecretStr(WSKEY)}
    return Settings(webbing=WebbingSettings(base_url=url, username=USERNAME, **secrets))


def esimgo_env(url: str) -> dict[str, str]:
    """The environment ``python -m carriers.doctor esimgo`` reads, as the worker's."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ESIMGO")}
    return env | {
        "ESIMGO__BASE_URL": f"{url}/v2.4",
        "ESIMGO__API_KEY": KEY,
        "PYTHONPATH": str(ROOT),
    }


def doctor(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "carriers.doctor", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def lines(text: str) -> dict[str, str]:
    """The report's assumption lines by name: the outcome and what was seen."""
    found = {}
    for row in text.splitlines()[:-1]:
        outcome = "not checked" if row.startswith("not checked") else row.split()[0]
        name, _, why = row[len(outcome) :].strip().partition(" ")
        found[name] = f"{outcome}: {why.strip()}"
    return found


def ledger(url: str) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = httpx.get(f"{url}/_sim/ledger").json()["entries"]
    return entries


def test_each_documented_assumption_has_one_check() -> None:
    telna = {f.name for f in dataclasses.fields(NOT_PUBLIC)} | set(RECORD_READINGS)
    assert {c.__name__ for c in doctor_telna.CHECKS} == telna
    assert [c.__name__ for c in doctor_webbing.CHECKS] == [f.name for f in dataclasses.fields(WIRE)]


def test_telna_as_shipped_confirms_every_assumption_without_changing_anything(
    telna_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ledger(telna_url)

    assert main(["telna", "--iccid", ICCID], telna_settings(telna_url)) == 0

    out = capsys.readouterr().out
    found = lines(out)
    assert set(found) == {c.__name__ for c in doctor_telna.CHECKS}
    unchecked = {name for name, v in found.items() if not v.startswith("confirmed")}
    assert unchecked == {"currency"}, out
    assert found["auth_scheme"].startswith("confirmed: raw key accepted")
    assert "the route looked the package up" in found["activate"]
    # The record shows no currency on a template: the setting is the operator's word.
    assert found["currency"] == (
        "not checked: no template names a currency: TELNA__CURRENCY=USD is taken on the"
        " operator's word"
    )
    assert found["package_price"] == f"confirmed: 1 package of {ICCID}, none showing a price"
    assert out.splitlines()[-1] == "telna: 11 confirmed, 0 contradicted, 1 not checked"
    assert ledger(telna_url) == before  # nothing ordered, activated or terminated


def test_a_telna_package_showing_a_price_contradicts_the_audits_reading_of_none(
    telna_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The audit compares no Telna price because packages show none (NOT_PUBLIC)."""
    shown = telna_api.package_json
    monkeypatch.setattr(
        telna_api, "package_json", lambda p: {**shown(p), "price": 1.5, "currency": "USD"}
    )
    assert main(["telna", "--iccid", ICCID], telna_settings(telna_url)) == 1
    found = lines(capsys.readouterr().out)
    assert [n for n, v in found.items() if v.startswith("contradicted")] == ["package_price"]
    assert "['currency', 'price']" in found["package_price"]


def test_telna_without_an_iccid_leaves_the_package_readings_unchecked(
    telna_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["telna"], telna_settings(telna_url)) == 0

    found = lines(capsys.readouterr().out)
    for name in ("package_times", "package_status", "package_usage_bytes"):
        assert found[name] == "not checked: needs --iccid"


def test_webbing_as_shipped_confirms_all_it_can_read_without_changing_anything(
    webbing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ledger(webbing_url)

    assert main(["webbing", "--iccid", ICCID], webbing_settings(webbing_url)) == 0

    out = capsys.readouterr().out
    found = lines(out)
    assert list(found) == [c.__name__ for c in doctor_webbing.CHECKS]
    unchecked = {name for name, v in found.items() if not v.startswith("confirmed")}
    assert unchecked == {"change", "currency"}, out
    assert found["change"].startswith("not checked: only a purchase would show it")
    assert found["currency"].startswith("not checked: no ProductRecord names a currency")
    assert "(never sent)" in found["endpoints"]
    assert found["device_product"].startswith(f"confirmed: {ICCID}: ProductID 1042 'Daily 1 GB'")
    assert found["suspend"] == "confirmed: 1 suspended device(s) read, none on a product"
    assert out.splitlines()[-1] == "webbing: 12 confirmed, 0 contradicted, 2 not checked"
    assert ledger(webbing_url) == before  # nothing bought, suspended or resumed


def test_webbing_without_an_iccid_leaves_the_device_product_unchecked(
    webbing_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = ledger(webbing_url)

    assert main(["webbing"], webbing_settings(webbing_url)) == 0

    out = capsys.readouterr().out
    found = lines(out)
    assert found["device_product"] == "not checked: needs --iccid"
    assert found["date_format"].startswith("confirmed: StartDate ")  # the account's first device
    assert out.splitlines()[-1] == "webbing: 10 confirmed, 0 contradicted, 4 not checked"
    assert ledger(webbing_url) == before


def test_esimgo_as_shipped_confirms_all_it_can_read_without_changing_anything(
    esimgo_url: str,
) -> None:
    before = ledger(esimgo_url)

    done = doctor("esimgo", "--iccid", ICCID, env=esimgo_env(esimgo_url))

    assert done.returncode == 0, done.stdout + done.stderr
    found = lines(done.stdout)
    assert list(found) == [c.__name__ for c in doctor_esimgo.CHECKS]
    unchecked = {name for name, v in found.items() if not v.startswith("confirmed")}
    assert unchecked == {"revoke_status", "webhook_digest"}, done.stdout
    assert "the route looked the assignment up" in found["revoke"]
    assert found["bundle_states"] == f"confirmed: active ×1, queued ×1 on {ICCID}"
    assert found["currency"].endswith(": HTTP 200: currency 'USD', total 1.5")
    assert done.stdout.splitlines()[-1] == "esimgo: 18 confirmed, 0 contradicted, 2 not checked"
    assert ledger(esimgo_url) == before  # nothing bought, assigned or revoked


def test_an_esimgo_without_rate_limit_headers_contradicts_the_pacing(esimgo_url: str) -> None:
    """The simulator set to contradict one choice: no X-Ratelimit-* headers."""
    off = httpx.post(f"{esimgo_url}/_sim/esimgo", json={"rate_limit_tokens": None})
    assert off.json()["rate_limit_tokens"] is None
    before = ledger(esimgo_url)

    done = doctor("esimgo", env=esimgo_env(esimgo_url))

    assert done.returncode == 1, done.stdout + done.stderr
    found = lines(done.stdout)
    contradicted = {name for name, v in found.items() if v.startswith("contradicted")}
    assert contradicted == {"rate_limit_headers"}, done.stdout
    assert "without readable X-Ratelimit-*" in found["rate_limit_headers"]
    assert ledger(esimgo_url) == before


def test_products_on_accounts_asmx_contradict_the_endpoints(
    webbing_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record's other guess for GetProductsList: the simulator has no such method there."""
    moved = {**WIRE.endpoints, "GetProductsList": "/accounts/Accounts.asmx"}
    monkeypatch.setattr(doctor_webbing, "WIRE", dataclasses.replace(WIRE, endpoints=moved))

    assert main(["webbing", "--iccid", ICCID], webbing_settings(webbing_url)) == 1

    out = capsys.readouterr().out
    found = lines(out)
    assert found["endpoints"].startswith(
        "contradicted: /accounts/Accounts.asmx GetProductsList: Fault soap:Client"
    )
    assert [n for n, v in found.items() if v.startswith("contradicted")] == ["endpoints"]
    assert found["credentials_header"].startswith("confirmed")  # read off GetServiceDevices
    assert found["paging"].startswith("not checked: GetProductsList: Fault")
    assert out.splitlines()[-1] == "webbing: 6 confirmed, 1 contradicted, 7 not checked"


def test_a_webbing_reading_dates_as_dd_mm_contradicts_the_date_format() -> None:
    """A service that refuses a 13th-or-later day as MM/dd/yyyy but reads the 1st."""
    product = "<ProductID>1</ProductID><DailyHighSpeedMB>1000</DailyHighSpeedMB>"
    results = {
        "GetProductsList": f"<Products><ProductRecord>{product}<ValidityHours>24"
        "</ValidityHours></ProductRecord></Products>" + PAGE,
        "GetServiceDevices": "<ServiceDevices><ServiceDeviceRecord><ICCID>1</ICCID>"
        "<StatusID>2</StatusID></ServiceDeviceRecord></ServiceDevices>" + PAGE,
        "GetDeviceUsage": "<Usage />" + PAGE,
    }

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            return httpx.Response(200, text=", ".join(WIRE.endpoints))
        method = request.headers["SOAPAction"].rpartition("/")[2]
        start = request.content.partition(b"<StartDate>")[2][3:5]
        result = OK + results[method]
        if start and int(start) > 12:
            result = "<Success>false</Success><ResponseCode>1000</ResponseCode>"
        body = (
            f'<soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body><{method}Response '
            f'xmlns="{WWS_NS}"><{method}Result>{result}</{method}Result></{method}Response>'
            "</soap:Body></soap:Envelope>"
        )
        return httpx.Response(200, text=body, headers={"Content-Type": "text/xml"})

    settings = webbing_settings("http://webbing.invalid")
    found = dict(asyncio.run(doctor_webbing.diagnose(settings, None, httpx.MockTransport(handle))))

    assert found["date_format"].outcome == "contradicted", found["date_format"]
    assert found["date_format"].why.endswith("read: dd/MM?")
    assert found["endpoints"].outcome == "confirmed"


OK = "<Success>true</Success><ResponseCode>0</ResponseCode>"
PAGE = (
    "<PaginationResponse><TotalRecords>1</TotalRecords><TotalPages>1</TotalPages>"
    "</PaginationResponse>"
)


def test_a_bearer_only_telna_contradicts_a_raw_auth_scheme(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve(create_telna(KEY, "secret", seed=3, auth_schemes=frozenset({"bearer"}))) as url:
        code = main(["telna"], telna_settings(url, auth_scheme="raw"))

    assert code == 1
    found = lines(capsys.readouterr().out)
    assert found["auth_scheme"].startswith("contradicted: raw key refused (HTTP 401")
    assert "set TELNA__AUTH_SCHEME=bearer" in found["auth_scheme"]
    assert found["paging"].startswith("confirmed")  # the other checks went on as Bearer


def test_a_telna_without_the_activate_route_contradicts_activate(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with serve(create_telna(KEY, "secret", seed=3, activate_route=False)) as url:
        code = main(["telna"], telna_settings(url))

    assert code == 1
    out = capsys.readouterr().out
    found = lines(out)
    assert found["activate"].startswith("contradicted: POST /pcr/packages/{id}/activate")
    assert "no such route" in found["activate"]
    assert found["terminate"].startswith("confirmed")
    assert out.splitlines()[-1] == "telna: 6 confirmed, 1 contradicted, 5 not checked"


def test_route_probe_tells_no_route_from_no_package_and_says_when_it_cannot() -> None:
    def answering(status: int, body: str) -> httpx.MockTransport:
        def handle(request: httpx.Request) -> httpx.Response:
            if request.method == "GET":
                return httpx.Response(
                    200, json={"total": 0, "offset": 0, "count": 0, "package_templates": []}
                )
            # An Express-style 404 echoes the path, package id included: no package named.
            text = body.replace("{path}", request.url.path)
            return httpx.Response(status, text=text)

        return httpx.MockTransport(handle)

    def activate(status: int, body: str) -> str:
        settings = telna_settings("http://telna.invalid")
        account = doctor_telna.TelnaAccount(settings, None, answering(status, body))
        return asyncio.run(doctor_telna.activate(account)).outcome

    assert activate(404, '{"error": "Package not found"}') == "confirmed"
    assert activate(404, "Cannot POST {path}") == "contradicted"
    assert activate(405, '{"error": "Method Not Allowed"}') == "contradicted"
    assert activate(401, '{"error": "missing or invalid API key"}') == "not checked"
    assert activate(502, "Bad Gateway") == "not checked"


def test_a_refused_key_or_missing_settings_exit_2_with_one_line(
    telna_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = Settings(telna=TelnaSettings(base_url=telna_url, api_key=SecretStr("wrong")))
    assert main(["telna"], wrong) == 2
    assert main(["telna"], Settings(telna=TelnaSettings(base_url=telna_url))) == 2
    assert main(["webbing"], Settings(webbing=WebbingSettings(username="u"))) == 2
    assert main(["esimgo"], Settings()) == 2
    assert main(["airalo"], Settings()) == 2

    out, err = capsys.readouterr()
    assert out == ""
    refused, unset, webbing_unset, esimgo_unset, usage = err.splitlines()
    assert refused.startswith("error: telna refuses the API key raw and as Bearer (HTTP 401")
    assert unset == "error: TELNA__API_KEY is not set"
    assert webbing_unset == "error: WEBBING__PASSWORD and WEBBING__WSKEY not set"
    assert esimgo_unset == "error: ESIMGO__API_KEY is not set"
    assert usage.startswith("error: argument carrier: invalid choice: 'airalo'")


def test_an_unreachable_carrier_exits_2_with_one_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, "TELNA__BASE_URL": url, "TELNA__API_KEY": KEY, "PYTHONPATH": str(ROOT)}

    done = subprocess.run(
        [sys.executable, "-m", "carriers.doctor", "telna"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1
    assert done.stderr.startswith(f"error: telna at {url} does not answer: ConnectError")
