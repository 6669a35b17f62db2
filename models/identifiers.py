"""ICCID and EID checks, used wherever an identifier enters the product.

ICCID: 19 or 20 digits, starting with the telecom industry prefix ``89``, last digit a
Luhn check digit. EID: 32 digits whose whole number is 1 modulo 97 (ISO 7064 MOD 97-10).
"""

from __future__ import annotations

import re


class InvalidIdentifier(ValueError):
    """An ICCID or EID that fails its format or check digit."""


def luhn_check_digit(payload: str) -> int:
    """The Luhn digit that makes ``payload + digit`` valid."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # doubled positions, counted from the digit left of the check digit
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return (10 - total % 10) % 10


def validate_iccid(value: str) -> str:
    """Return the ICCID if valid, else raise ``InvalidIdentifier`` saying why."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise InvalidIdentifier("ICCID must be 19 or 20 digits")
    if len(value) not in (19, 20):
        raise InvalidIdentifier(f"ICCID must be 19 or 20 digits, got {len(value)}")
    if not value.startswith("89"):
        raise InvalidIdentifier("ICCID must start with 89")
    if luhn_check_digit(value[:-1]) != int(value[-1]):
        raise InvalidIdentifier("ICCID check digit (Luhn) is wrong")
    return value


def validate_eid(value: str) -> str:
    """Return the EID if valid, else raise ``InvalidIdentifier`` saying why."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise InvalidIdentifier("EID must be 32 digits")
    if len(value) != 32:
        raise InvalidIdentifier(f"EID must be 32 digits, got {len(value)}")
    if int(value) % 97 != 1:
        raise InvalidIdentifier("EID check digits (mod 97) are wrong")
    return value


def make_iccid(body: str) -> str:
    """A valid ICCID from 18 or 19 digits starting with 89 (used by demos and tests)."""
    return body + str(luhn_check_digit(body))


def make_eid(body: str) -> str:
    """A valid EID from 30 digits: appends the two ISO 7064 check digits."""
    check = 98 - (int(body) * 100) % 97
    return f"{body}{check:02d}"


# The operator's own name of a customer: letters, digits and a few separators, starting
# with a letter or digit (so a CSV export's cell is never read as a spreadsheet formula).
CUSTOMER_REF_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._:@/+-]{0,63}$"


def validate_customer_ref(value: str) -> str:
    """Return the customer_ref if valid, else raise ``InvalidIdentifier`` saying why."""
    if not isinstance(value, str) or re.fullmatch(CUSTOMER_REF_PATTERN, value) is None:
        raise InvalidIdentifier(
            "customer_ref must be 1 to 64 of letters, digits, space and ._:@/+-, starting"
            " with a letter or digit"
        )
    return value
