"""eSIM Go's V3 usage callbacks: the signature in hex or base64, and the body read."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime

import pytest

from carriers.esimgo_events import EsimEvent, UsageAlert, parse_callback, verify_signature

KEY = "org-api-key"
# The record's V3 example, as eSIM Go would send it (bytes exactly as on the wire).
BODY = json.dumps(
    {
        "iccid": "8944538532008160222",
        "alertType": "Utilisation",
        "bundle": {
            "id": "215009266",
            "reference": "3a6e2e40-0000-0000-0000-000000000000-0",
            "name": "esim_1GB_7D_GB_V2",
            "description": "eSIM, 1GB, 7 Days, United Kingdom, V2",
            "initialQuantity": 1000000000,
            "remainingQuantity": 750000000,
            "startTime": "2006-01-02T15:04:05Z",
            "endTime": "2007-01-02T15:04:05Z",
            "unlimited": False,
        },
    }
).encode()


def digest(body: bytes, key: str = KEY) -> bytes:
    return hmac.new(key.encode(), body, hashlib.sha256).digest()


def test_a_hex_signature_verifies() -> None:
    assert verify_signature(BODY, digest(BODY).hex(), KEY)
    assert verify_signature(BODY, digest(BODY).hex().upper(), KEY)


def test_a_base64_signature_verifies() -> None:
    assert verify_signature(BODY, base64.b64encode(digest(BODY)).decode(), KEY)


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "garbage",
        "sha256=" + "0" * 64,
        "0" * 64,
        base64.b64encode(b"x" * 32).decode(),
        digest(BODY).hex()[:-2],
        digest(BODY, "another-key").hex(),
        base64.b64encode(digest(BODY, "another-key")).decode(),
    ],
)
def test_anything_else_does_not_verify(header: str | None) -> None:
    assert not verify_signature(BODY, header, KEY)


def test_the_digest_is_of_the_raw_body_not_of_its_json() -> None:
    reserialised = json.dumps(json.loads(BODY), separators=(",", ":")).encode()
    assert not verify_signature(reserialised, digest(BODY).hex(), KEY)


def test_no_key_never_verifies() -> None:
    assert not verify_signature(BODY, digest(BODY, "").hex(), "")


def test_a_usage_callback_reads_as_an_alert_on_a_line() -> None:
    alert = parse_callback(BODY)
    assert alert == UsageAlert(
        iccid="8944538532008160222",
        assignment_id="215009266",
        alert_type="Utilisation",
        bundle="esim_1GB_7D_GB_V2",
        initial_bytes=1_000_000_000,
        remaining_bytes=750_000_000,
        start_time=datetime(2006, 1, 2, 15, 4, 5, tzinfo=UTC),
        end_time=datetime(2007, 1, 2, 15, 4, 5, tzinfo=UTC),
        reference="3a6e2e40-0000-0000-0000-000000000000-0",
    )
    assert alert.used_bytes == 250_000_000
    assert alert.line_id == "8944538532008160222:esim_1GB_7D_GB_V2:215009266"
    assert alert.dedupe_key == ("8944538532008160222", "215009266", "Utilisation", 750_000_000)


def test_a_first_use_callback_before_times_are_known_reads_too() -> None:
    body = json.loads(BODY)
    body["alertType"] = "FirstUse"
    del body["bundle"]["startTime"], body["bundle"]["endTime"]
    alert = parse_callback(json.dumps(body).encode())
    assert isinstance(alert, UsageAlert)
    assert (alert.alert_type, alert.start_time, alert.end_time) == ("FirstUse", None, None)


def test_an_esim_deleted_notification_reads_as_an_esim_event() -> None:
    body = b'{"date": "2026-12-07T08:00:00Z", "event": "esim.deleted", "iccid": "8944"}'
    assert parse_callback(body) == EsimEvent(
        "esim.deleted", "8944", datetime(2026, 12, 7, 8, tzinfo=UTC)
    )


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[]",
        b'{"iccid": "8944", "alertType": "Utilisation"}',
        # V2: no assignment id, quantities as floats of unclear units
        b'{"iccid": "8944", "alertType": "Utilisation", "bundle": {"name": "b",'
        b' "initialQuantity": 1000.00, "remainingQuantity": 90.00}}',
        BODY.replace(b'"Utilisation"', b'"Expiry"'),
        BODY.replace(b"750000000", b"-1"),
        BODY.replace(b'"2006-01-02T15:04:05Z"', b'"2006-01-02 15:04:05"'),
    ],
)
def test_a_body_of_neither_shape_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_callback(body)
