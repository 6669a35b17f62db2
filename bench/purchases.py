"""Invariant 1 of DESIGN section 8, at most one purchase per (balance, seq), judged from
the carrier's records against the database. The chaos soak, the end-to-end tests and
the midnight herd all count purchases made twice with ``made_twice``.

Most carriers keep no field for our reference (DESIGN section 5): a ledger entry's
``reference`` may be null. What every carrier does keep is its own package id, one per
purchase, and the database keeps it too, as ``balance_line.carrier_line_id``. So a
purchase is explained by the line of ours that holds its package, and:

- an ``order`` on one of our eSIMs whose package no line of ours holds (on that eSIM) is
  a purchase made twice, or one nobody meant: each (balance, seq) has one row
  (``uq_balance_line_seq``) holding one package, so of two purchases for one seq at
  most one is held;
- per balance, the purchases its lines explain are no more than its lines (a carrier
  naming two purchases with one package id);
- where the carrier kept the reference, two purchases with one reference are reported
  too, as the check did when every entry carried one.

A line the audit recorded afterwards (``orphan_purchase``, repair ``record_row``)
explains its package like any other line: it is a purchase the product now holds, and
the audit writes it under the seq it was bought for (its reference's: without one it
writes nothing, and the package is reported here). It cannot hide a purchase made
twice: its seq's row can hold only one of the two packages, and the other one is
reported. Were it written under a seq no purchase of the balance held yet, the
workflow's own purchase of that seq would be the one left without a row, or the
workflow adopts the recorded package as that seq's line and it is that seq's only
purchase. What no check here tells apart is a package the audit recorded past the
balance's last line: a purchase nobody meant, but bought once, as the reference count
did not tell either.

A carrier that replaces a device's one product in place (Webbing) shows no id per
purchase: its package ids are the simulator's own, and our line is named by the moment
its product took effect. There a line holds the purchase made on its eSIM at that
moment (the ledger records a change's ``order`` when it takes effect).

Judge once the balances have settled (closed, or past their last order): an order in
flight is at the carrier before its line is in the database.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar


class HeldLine(Protocol):
    """A ``balance_line`` row, as far as this needs it."""

    @property
    def balance_id(self) -> str: ...
    @property
    def iccid(self) -> str: ...
    @property
    def seq(self) -> int: ...
    @property
    def carrier_line_id(self) -> str | None: ...
    @property
    def activated_at(self) -> datetime | None: ...


L = TypeVar("L", bound=HeldLine)


def made_twice(
    entries: Iterable[Mapping[str, Any]], lines: Iterable[HeldLine], iccids: set[str]
) -> list[str]:
    """One readable line per purchase made twice among the ``order`` entries on
    ``iccids`` (a carrier's ledger, or ``as_orders`` of its packages), judged against
    the database's ``lines``; an empty list if every purchase is explained once."""
    orders = [e for e in entries if e["action"] == "order" and e["iccid"] in iccids]
    problems = []
    references = Counter(e["reference"] for e in orders if e.get("reference"))
    for reference, n in sorted(references.items()):
        if n > 1:
            problems.append(f"reference {reference} bought {n} times")
    lines = list(lines)
    holding = package_lines(orders, lines)
    # One line per package on an eSIM: a Webbing line's "package" is the moment its
    # product took effect, which two devices can share to the millisecond.
    held = {
        (line.iccid, package_id(line.carrier_line_id)): line
        for line in lines
        if line.carrier_line_id
    }
    explained: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for e in orders:
        line = holding.get(e["package_id"])
        if line is None or line.iccid != e["iccid"]:
            problems.append(
                f"{e['iccid']}: package {e['package_id']} bought at {e['at']}, "
                "held by no line of ours"
            )
        else:
            explained[line.balance_id].append(e)
    lines_of = Counter(line.balance_id for line in held.values())
    for balance_id, bought in sorted(explained.items()):
        if len(bought) > lines_of[balance_id]:
            # Which purchases, and which line each is taken for: what to look for.
            each = ", ".join(
                f"{e['package_id']} at {e['at']} for line {holding[e['package_id']].seq}"
                for e in bought
            )
            problems.append(
                f"balance {balance_id}: {len(bought)} purchases for its "
                f"{lines_of[balance_id]} lines ({each})"
            )
    return problems


def package_lines(entries: Iterable[Mapping[str, Any]], lines: Iterable[L]) -> dict[str, L]:
    """Each purchase's package id → the line of ours on its eSIM that holds it: by the
    package id, or, at a carrier replacing a product in place, by the moment the
    purchase took effect (the ``order``'s time, or a package's ``activated_at``)."""
    lines = list(lines)
    by_id = {package_id(line.carrier_line_id): line for line in lines if line.carrier_line_id}
    by_start = {(line.iccid, _ms(line.activated_at)): line for line in lines if line.activated_at}
    holding: dict[str, L] = {}
    for e in entries:
        if e["action"] != "order":
            continue
        line = by_id.get(e["package_id"])
        if line is None or line.iccid != e["iccid"]:
            # The carrier's millisecond and the simulator's microseconds may round either
            # way: a start within a millisecond of the line's is its own.
            at = _ms(e.get("activated_at") or e["at"])
            line = next(
                (found for ms in (at, at - 1, at + 1) if (found := by_start.get((e["iccid"], ms)))),
                None,
            )
        if line is not None:
            holding[e["package_id"]] = line
    return holding


def package_id(line_id: str) -> str:
    """The carrier's package id in one of our line ids: the id itself (Telna), or what
    follows its last ``:`` where the client names a line by more than its package (eSIM
    Go: ``{iccid}:{bundle name}:{assignment id}``). A Webbing line, named by the moment
    it took effect, names no package, and matches nothing by id."""
    return line_id.rsplit(":", 1)[-1]


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _ms(moment: datetime | str) -> int:
    """A time to the millisecond (an ISO string, as the simulators write them, or not)."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def as_orders(packages: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A simulator's packages (``GET /_sim/packages``) as the ``order`` entries of its
    ledger: one purchase each."""
    return [
        {
            "at": p["ordered_at"],
            "action": "order",
            "iccid": p["iccid"],
            "package_id": p["id"],
            "reference": p.get("reference"),
            "product_id": p["product_id"],
            "activated_at": p.get("activated_at"),
        }
        for p in packages
    ]
