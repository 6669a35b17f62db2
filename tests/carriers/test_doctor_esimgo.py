"""The carrier doctor for eSIM Go: against a fake eSIM Go that agrees with every WIRE
choice (exit 0, nothing bought or revoked), and against ones that contradict one."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr

from carriers import doctor_esimgo
from carriers.doctor import main
from carriers.esimgo import WIRE
from config import EsimGoSettings, Settings
from tests.carriers.esimgo_fake import BASE, KEY, FakeEsimGo, Reply
from tests.carriers.test_doctor import lines

ICCID = "8944538532008160222"
DAY = "esim_1GB_1D_GB_V2"


def settings(key: str = KEY, currency: str = "USD") -> Settings:
    esimgo = EsimGoSettings(
        base_url=BASE, api_key=SecretStr(key), rate_limit_per_second=0, currency=currency
    )
    return Settings(esimgo=esimgo)


def account() -> FakeEsimGo:
    """An eSIM that has used one day (expired), is on its second (active) and has a third
    queued."""
    fake = FakeEsimGo()
    used = fake.assign(ICCID, DAY, "active", at=datetime.now(UTC) - timedelta(days=2))
    fake.start(used, used=1_000_000_000)
    used.start = datetime.now(UTC) - timedelta(days=2)
    used.end, used.state = used.start + timedelta(days=1), "expired"
    fake.start(fake.assign(ICCID, DAY, "active"), used=300_000_000)
    fake.assign(ICCID, DAY)
    return fake


def run(
    fake: FakeEsimGo, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, dict[str, str], str]:
    status = main(["esimgo", *args], settings(), fake.transport)
    out = capsys.readouterr().out
    return status, lines(out), out


def test_each_wire_choice_has_one_check() -> None:
    assert [c.__name__ for c in doctor_esimgo.CHECKS] == [f.name for f in dataclasses.fields(WIRE)]


def test_an_esimgo_that_agrees_confirms_every_choice_without_changing_anything(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = account()
    before = [(a.id, a.state) for a in fake.esims[ICCID]]

    status, found, out = run(fake, capsys, "--iccid", ICCID)

    assert status == 0, out
    assert set(found) == {c.__name__ for c in doctor_esimgo.CHECKS}
    unchecked = {name for name, v in found.items() if not v.startswith("confirmed")}
    assert unchecked == {"revoke_status", "webhook_digest"}, out
    assert "MB of 10^6 bytes, as 3 bundle names and 3 assignments" in found["data_amount_units"]
    assert "the route looked the assignment up" in found["revoke"]
    assert "costs: GET /catalogue 1" in found["rate_limit_headers"]
    assert found["currency"].startswith("confirmed: POST /orders of type validate for ")
    assert found["package_price"] == f"confirmed: 3 assignments on {ICCID}, none showing a price"
    assert out.splitlines()[-1] == "esimgo: 18 confirmed, 0 contradicted, 2 not checked"
    # Nothing bought, assigned or revoked: the order and the revoke were of type validate.
    assert [(a.id, a.state) for a in fake.esims[ICCID]] == before
    changes = [r for r in fake.requests if r.method != "GET"]
    assert [r.method for r in changes] == ["POST", "DELETE"]
    assert b'"type":"validate"' in changes[0].content.replace(b" ", b"")
    assert changes[1].url.params["type"] == "validate"


def test_an_order_in_another_currency_than_the_catalogue_is_read_in_contradicts_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status = main(["esimgo", "--iccid", ICCID], settings(currency="EUR"), account().transport)
    found = lines(capsys.readouterr().out)
    assert status == 1
    assert [n for n, v in found.items() if v.startswith("contradicted")] == ["currency"]
    assert "currency 'USD', but ESIMGO__CURRENCY=EUR" in found["currency"]


def test_without_an_iccid_the_esims_readings_are_not_checked(
    capsys: pytest.CaptureFixture[str],
) -> None:
    status, found, out = run(account(), capsys)
    assert status == 0, out
    confirmed = {n for n, v in found.items() if v.startswith("confirmed")}
    assert confirmed == {
        "auth",
        "catalogue",
        "data_amount_units",
        "bundle_duration",
        "price",
        "rate_limit_headers",
    }
    assert found["quantities"] == "not checked: needs --iccid"


def test_answers_without_rate_limit_headers_contradict_them(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = account()
    fake.rate_headers = False
    status, found, _ = run(fake, capsys, "--iccid", ICCID)
    assert status == 1
    assert found["rate_limit_headers"].startswith("contradicted: ")
    assert "without readable X-Ratelimit-*" in found["rate_limit_headers"]


def test_assignments_showing_a_price_contradict_the_audits_reading_of_none(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The audit compares no eSIM Go price because assignments show none (WIRE)."""
    fake = account()
    fake.esims[ICCID][0].extra = {"pricePerUnit": 1.5, "currency": "USD"}
    status, found, _ = run(fake, capsys, "--iccid", ICCID)
    assert status == 1
    assert [n for n, v in found.items() if v.startswith("contradicted")] == ["package_price"]
    assert "['currency', 'pricePerUnit']" in found["package_price"]


def test_an_order_of_one_bundle_answered_503_contradicts_that_503_is_a_refusal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An account that processes even an order of one bundle meanwhile (503, Retry-After):
    a 503 to an order could then be one taken, and the client's reading is wrong."""
    fake = account()
    busy = Reply(503, {"message": "Processing"}, {"Retry-After": "1"}, "POST")
    fake.replies.append(busy)  # the one order the checks validate
    status, found, _ = run(fake, capsys, "--iccid", ICCID)
    assert status == 1
    assert found["order_refused_by_503"].startswith("contradicted: ")
    assert "HTTP 503 'Processing'" in found["order_refused_by_503"]


def test_quantities_in_mb_contradict_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    fake = account()
    for a in fake.esims[ICCID]:
        a.initial, a.remaining = 1000, (a.remaining or 0) // 1_000_000
    status, found, _ = run(fake, capsys, "--iccid", ICCID)
    assert status == 1
    assert "too small for bytes" in found["quantities"]
    assert found["data_amount_units"].startswith("contradicted: ")


def test_a_catalogue_in_binary_mb_contradicts_decimal_units(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = FakeEsimGo()
    fake.catalogue[0]["dataAmount"] = 1024
    status, found, _ = run(fake, capsys)
    assert status == 1
    assert "esim_1GB_1D_GB_V2: dataAmount 1024, its name says 1000 MB" in found["data_amount_units"]


def test_a_window_ending_at_midnight_rather_than_a_day_from_start_contradicts_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = account()
    active = fake.esims[ICCID][1]
    assert active.start is not None
    active.end = (active.start + timedelta(days=1)).replace(hour=0, minute=0, second=0)
    status, found, _ = run(fake, capsys, "--iccid", ICCID)
    assert status == 1
    assert found["assignment_times"].startswith("contradicted: ")


def test_a_latest_assignment_that_is_not_the_latest_contradicts_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = account()
    fake.latest_is_oldest = True
    status, found, _ = run(fake, capsys, "--iccid", ICCID)
    assert status == 1
    oldest, newest = fake.esims[ICCID][0].id, fake.esims[ICCID][-1].id
    assert found["latest_assignment"].startswith("contradicted: ")
    assert (
        f"answered assignment {oldest}; the latest listed is {newest}" in found["latest_assignment"]
    )


def test_an_esimgo_letting_a_made_up_key_in_contradicts_auth(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = account()
    fake.check_key = False
    status, found, _ = run(fake, capsys)
    assert status == 1
    assert found["auth"].startswith("contradicted: X-API-Key accepted; a made-up key: HTTP 200")


def test_a_refused_key_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["esimgo"], settings("wrong"), account().transport) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "error: esimgo refuses ESIMGO__API_KEY (HTTP 403 Forbidden): check it\n"


def test_a_read_refused_for_the_rate_limit_is_sent_again_after_retry_after(
    capsys: pytest.CaptureFixture[str],
) -> None:
    fake = account()
    fake.replies.append(Reply(429, {"message": "Rate limit exceeded"}, {"Retry-After": "0"}))
    status, found, out = run(fake, capsys, "--iccid", ICCID)
    assert status == 0, out
    assert found["auth"].startswith("confirmed: ")
