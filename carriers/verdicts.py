"""What the carrier doctor says of one assumption of a client: a verdict and what was seen.

A check is a small async function named after the assumption it checks; it returns a
:class:`Verdict`, raises :class:`NotChecked` when the account cannot tell (no ICCID given,
a read refused or unavailable), and :class:`CannotCheck` when the doctor cannot go on at
all (carrier unreachable, credentials refused, settings missing).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

Outcome = Literal["confirmed", "contradicted", "not checked"]
A = TypeVar("A")


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    why: str


def confirmed(why: str) -> Verdict:
    return Verdict("confirmed", why)


def contradicted(why: str) -> Verdict:
    return Verdict("contradicted", why)


def not_checked(why: str) -> Verdict:
    return Verdict("not checked", why)


class NotChecked(Exception):
    """The account cannot tell whether the assumption holds; the message says why."""


class CannotCheck(Exception):
    """The doctor cannot run against this account; the message is the one line shown."""


async def run_checks(
    account: A, checks: Sequence[Callable[[A], Awaitable[Verdict]]]
) -> list[tuple[str, Verdict]]:
    """Each check's verdict, by the name of the assumption, in order."""
    verdicts = []
    for check in checks:
        try:
            verdict = await check(account)
        except NotChecked as exc:
            verdict = not_checked(str(exc))
        verdicts.append((check.__name__, verdict))
    return verdicts


# Words in a field's name that say money: a record showing one may say what was charged.
_MONEY_WORDS = ("price", "cost", "charge", "amount", "total", "currency")


def price_fields(record: Mapping[str, Any]) -> list[str]:
    """The fields of a carrier's record whose names say money (``price``, ``pricePerUnit``,
    ``Currency``, ``total`` ...): where a client reads none on a package, any is a price the
    carrier shows that the audit does not compare (a ``package_price`` contradiction)."""
    return sorted(k for k in record if any(w in str(k).lower() for w in _MONEY_WORDS))
