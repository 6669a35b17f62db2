"""Money as the product counts it: integer minor units (cents) of an ISO 4217 currency.

Prices come from the carriers' catalogues in minor units; a policy's cap and the reports
speak decimals of two places ("12.50"). Every currency here has two decimal places (the
carriers' catalogues are in USD); one with another exponent would need it said here.
"""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")


def cents(amount: Decimal) -> int:
    """``amount`` in minor units; it has at most two decimal places (validated upstream)."""
    return int((amount / CENT).to_integral_value())


def amount(minor_units: int) -> str:
    """Minor units as the decimal an operator reads and a report exports: 1250 -> "12.50"."""
    return str((Decimal(minor_units) * CENT).quantize(CENT))


def add(into: dict[str, int], currency: str, minor_units: int) -> None:
    into[currency] = into.get(currency, 0) + minor_units
