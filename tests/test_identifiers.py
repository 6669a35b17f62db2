from __future__ import annotations

import pytest

from models.identifiers import (
    InvalidIdentifier,
    luhn_check_digit,
    make_eid,
    make_iccid,
    validate_eid,
    validate_iccid,
)

# A published example EID (GSMA SGP.29) and a real-format ICCID.
KNOWN_EID = "89049032123451234512345678901235"
KNOWN_ICCID = "89882280666027595366"


def test_known_identifiers_pass() -> None:
    assert validate_iccid(KNOWN_ICCID) == KNOWN_ICCID
    assert validate_eid(KNOWN_EID) == KNOWN_EID


def test_generated_identifiers_pass() -> None:
    for n in range(50):
        validate_iccid(make_iccid(f"8944{n:014d}"))
        validate_iccid(make_iccid(f"8901{n:015d}"))
        validate_eid(make_eid(f"89049032{n:022d}"))


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("89882280666027595367", "Luhn"),
        ("8988228066602759536", "Luhn"),
        ("898822806660275953", "19 or 20 digits"),
        ("898822806660275953660", "19 or 20 digits"),
        ("99882280666027595366", "start with 89"),
        ("8988228066602759536x", "digits"),
        ("８９８８２２８０６６６０２７５９５３６６", "digits"),
        ("", "digits"),
        ("8988228066602759536'; DROP TABLE esim;--", "digits"),
    ],
)
def test_bad_iccids_say_why(value: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match=why):
        validate_iccid(value)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("89049032123451234512345678901234", "mod 97"),
        ("8904903212345123451234567890123", "32 digits"),
        ("890490321234512345123456789012355", "32 digits"),
        ("8904903212345123451234567890123a", "digits"),
    ],
)
def test_bad_eids_say_why(value: str, why: str) -> None:
    with pytest.raises(InvalidIdentifier, match=why):
        validate_eid(value)


def test_every_single_digit_error_is_caught_by_luhn() -> None:
    body = "894400000000001234"
    good = make_iccid(body)
    for pos in range(len(good)):
        for digit in "0123456789":
            if digit == good[pos]:
                continue
            bad = good[:pos] + digit + good[pos + 1 :]
            if bad.startswith("89"):
                assert luhn_check_digit(bad[:-1]) != int(bad[-1])
