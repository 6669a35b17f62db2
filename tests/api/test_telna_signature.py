from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest

from api.telna_events import SignatureError, balance_line, parse, sign, verify

SECRET = "s3cret"
BODY = json.dumps(
    {
        "event_id": "e1",
        "event": "usage.threshold",
        "timestamp": 1_700_000_000_000,
        "eventDetails": {
            "iccid": "8944000000000000019",
            "package_id": "p1",
            "customer_ref": "bal_abc:7",
            "threshold_percent": 80,
            "data_usage": 800,
        },
    }
).encode()


def test_a_fresh_signature_verifies() -> None:
    verify(SECRET, sign(SECRET, BODY, int(time.time())), BODY)


# Headers are signed when the test runs, not when it is collected: a suite may run a
# test minutes after collecting it, and the ids stay the same in every process.
BAD_HEADERS: dict[str, tuple[Callable[[], str | None], str]] = {
    "none": (lambda: None, "missing"),
    "empty": (lambda: "", "missing"),
    "no-time": (lambda: "v1=abc", "malformed"),
    "time-not-a-number": (lambda: "t=notanumber,v1=abc", "malformed"),
    "other-secret": (lambda: sign("other", BODY, int(time.time())), "does not match"),
    "other-body": (lambda: sign(SECRET, BODY + b" ", int(time.time())), "does not match"),
    "too-old": (lambda: sign(SECRET, BODY, int(time.time()) - 400), "tolerance"),
    "too-new": (lambda: sign(SECRET, BODY, int(time.time()) + 400), "tolerance"),
}


@pytest.mark.parametrize("case", list(BAD_HEADERS))
def test_bad_signatures_are_refused(case: str) -> None:
    header, why = BAD_HEADERS[case]
    with pytest.raises(SignatureError, match=why):
        verify(SECRET, header(), BODY)


def test_no_secret_configured_refuses_everything() -> None:
    with pytest.raises(SignatureError, match="not configured"):
        verify("", sign("", BODY, int(time.time())), BODY)


def test_reference_names_the_balance_and_line() -> None:
    event = parse(BODY)
    assert balance_line(event) == ("bal_abc", 7)
    assert event.observed_at.year == 2023


@pytest.mark.parametrize("body", [b"", b"{", b"[]", b'{"event": 1}', b"\xff\xfe"])
def test_broken_bodies_are_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse(body)
