"""The ICCID check of the simulators' control API (``/_sim/esims``): 19 or 20 digits,
starting with 89, the last a Luhn check digit. The simulators' own, as a carrier has its
own: they share no code with the product."""

from __future__ import annotations


class InvalidIccid(ValueError):
    """An ICCID that fails its format or check digit."""


def validate_iccid(value: str) -> str:
    """Return the ICCID if valid, else raise ``InvalidIccid`` saying why."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        raise InvalidIccid("ICCID must be 19 or 20 digits")
    if len(value) not in (19, 20):
        raise InvalidIccid(f"ICCID must be 19 or 20 digits, got {len(value)}")
    if not value.startswith("89"):
        raise InvalidIccid("ICCID must start with 89")
    if not _luhn_valid(value):
        raise InvalidIccid("ICCID check digit (Luhn) is wrong")
    return value


def _luhn_valid(digits: str) -> bool:
    """Whether the Luhn sum of ``digits`` (check digit included) is a multiple of 10."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:  # every second digit from the right, the check digit being the first
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0
