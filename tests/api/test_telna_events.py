"""Telna events as the record has them, and raw delivery's Basic credentials."""

from __future__ import annotations

import base64
import json

import pytest

from api.telna_events import USAGE_ALERT, basic_password_matches, parse
from tests.api.conftest import STATUS_CHANGE, telna_event

SECRET = "s3cret"


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_a_usage_alert_names_the_package_and_its_bytes() -> None:
    event = parse(telna_event("8944000000000000019", "p1", used=800))
    assert (event.name, event.package_id) == (USAGE_ALERT, "p1")
    assert event.details.package.used_bytes == 800
    assert event.details.sim.iccid == "8944000000000000019"
    assert not event.terminated


def test_a_termination_is_a_status_change_to_terminated() -> None:
    ended = parse(telna_event("8944000000000000019", "p1", name=STATUS_CHANGE, status="TERMINATED"))
    assert ended.terminated
    started = parse(telna_event("8944000000000000019", "p1", name=STATUS_CHANGE))
    assert not started.terminated
    assert not ended.used_up  # 800 kB of 1 MB: forced, not used up


def test_a_termination_at_the_whole_allowance_is_the_data_used_up() -> None:
    iccid = "8944000000000000019"
    used_up = parse(
        telna_event(iccid, "p1", used=1_000_000, name=STATUS_CHANGE, status="TERMINATED")
    )
    assert used_up.terminated and used_up.used_up
    assert not parse(telna_event(iccid, "p1", used=1_000_000)).used_up  # a usage alert


def test_a_numeric_package_id_is_kept_as_text_and_the_time_is_in_ms() -> None:
    event = json.loads(telna_event("8944000000000000019"))
    event["eventDetails"]["package"]["id"] = 12345
    event["eventTimestamp"] = 1_689_714_160_492
    parsed = parse(json.dumps(event))
    assert parsed.package_id == "12345"
    assert parsed.observed_at.isoformat() == "2023-07-18T21:02:40.492000+00:00"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b"[]",
        b"\xff\xfe",
        b'{"eventName": "PACKAGE_DATA_USAGE_ALERT"}',
        # the names of the invented scheme this replaced
        b'{"event_id": "e", "event": "usage.threshold", "timestamp": 1, "eventDetails": {}}',
    ],
)
def test_broken_events_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse(body)


@pytest.mark.parametrize(
    ("path", "value"),
    [(("package", "packageUsedBytes"), -1), (("package", "packageUsedBytes"), None)],
)
def test_a_usage_alert_needs_its_used_bytes(path: tuple[str, str], value: object) -> None:
    event = json.loads(telna_event("8944000000000000019"))
    event["eventDetails"][path[0]][path[1]] = value
    with pytest.raises(ValueError, match="packageUsedBytes"):
        parse(json.dumps(event))


@pytest.mark.parametrize(
    ("header", "ok"),
    [
        (_basic("telna", SECRET), True),
        (_basic("anyone", SECRET), True),
        (_basic("telna", SECRET + "x"), False),
        (_basic("telna", ""), False),
        ("Basic " + base64.b64encode(SECRET.encode()).decode(), False),  # no colon
        ("Bearer " + SECRET, False),
        ("Basic not-base64!", False),
        ("Basic " + "é" * 8, False),
        ("Basic", False),
        ("", False),
        (None, False),
    ],
)
def test_raw_delivery_needs_the_secret_as_basic_password(header: str | None, ok: bool) -> None:
    assert basic_password_matches(header, SECRET) is ok


def test_no_secret_configured_matches_nothing() -> None:
    assert not basic_password_matches(_basic("telna", ""), "")
