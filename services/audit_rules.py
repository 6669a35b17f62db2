"""The audit's comparison of one balance: database rows against the carrier's packages.

Pure functions of what was read (no I/O, no clock): ``compare`` returns the findings and,
for each, the repair the audit may make. ``activities/audit.py`` reads, repairs and
records; the rules themselves are written down there, in its module docstring.

A carrier package is identified with a database line by the carrier's package id (our
``balance_line.carrier_line_id``) first, and by our reference ``{balance_id}:{seq}`` only
when the package carries one: most carriers have no field for it (DESIGN section 5), so
their packages come back with ``reference`` None. What the audit tells the workflow
names our reference as the database row holds it, never as the carrier echoes it.

The spend ledger is compared too (``_prices``): a line the carrier holds a package for
with no price recorded, and a recorded price a package contradicts where the package
shows what the carrier charged (no carrier's does today: each client's
``package_price`` declaration says so).

Everything recent is left alone: a carrier change younger than ``settle`` seconds may
be one the workflow is about to record (an order whose answer is on its way, a switch
between the carrier's confirmation and the database write), so it is not judged yet.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from carriers.base import CarrierLine
from models import money
from models.payloads import Policy

OPEN_STATES = frozenset({"active", "scheduled"})


class Kind(StrEnum):
    """The disagreements the audit looks for (``audit_<kind>`` ledger events)."""

    missing_workflow = "missing_workflow"
    ghost_line = "ghost_line"
    orphan_purchase = "orphan_purchase"
    two_active_lines = "two_active_lines"
    missing_scheduled_line = "missing_scheduled_line"
    stuck_scheduled = "stuck_scheduled"
    unpriced_purchase = "unpriced_purchase"
    price_mismatch = "price_mismatch"


class Repair(StrEnum):
    """What the audit does about a finding."""

    correct_row = "correct_row"  # the database row takes the carrier's truth
    record_row = "record_row"  # the database learns a line it did not know
    deactivate = "deactivate"  # end the line at the carrier, then record it
    notify = "notify"  # tell the balance's workflow (``audit`` signal)
    record_price = "record_price"  # write the price the carrier shows on an unpriced row
    flag = "flag"  # recorded only: an operator looks


class DbLine(BaseModel):
    """A ``balance_line`` row as the audit reads it."""

    seq: int
    reference: str
    state: str
    carrier_line_id: str | None = None
    ordered_at: datetime | None = None
    # What the purchase cost as the spend ledger recorded it (None: never recorded).
    price_cents: int | None = None
    currency: str | None = None


class BalanceView(BaseModel):
    """An open balance as the database says it is."""

    balance_id: str
    iccid: str
    carrier: str
    line_seq: int | None = None
    paused: bool = False
    lines_total: int | None = None
    # When the balance was opened: a package without our reference ordered before it is
    # not one of its purchases (the eSIM's earlier balances', or the carrier's own).
    opened_at: datetime | None = None
    policy: Policy = Policy()
    validity_seconds: int
    reset: str = "rolling"
    lines: list[DbLine] = []


class Finding(BaseModel):
    """One disagreement; ``subject`` (a reference or package id) makes its event key.

    ``reference``: our reference of the line as the database row holds it, which is what
    a notice to the workflow names (None for a package no row knows)."""

    kind: Kind
    subject: str
    seq: int | None = None
    line_id: str | None = None
    reference: str | None = None
    repairs: list[Repair] = []
    detail: dict[str, Any] = {}


def seq_of(reference: str | None, balance_id: str) -> int | None:
    """The seq in our reference ``{balance_id}:{seq}``, or None if it is not ours."""
    if reference is None or not reference.startswith(f"{balance_id}:"):
        return None
    tail = reference.removeprefix(f"{balance_id}:")
    return int(tail) if tail.isdigit() else None


def identify(lines: list[DbLine], found: list[CarrierLine]) -> dict[str, DbLine]:
    """The database line each package is, by package id: the row holding the package's
    id; else, only if the package carries a reference, the row of that reference while
    the row holds no package id. A row is one package at most: another package carrying
    the reference of a row that holds an id, or that an older package took, is another
    purchase, not that line."""
    by_id = {row.carrier_line_id: row for row in lines if row.carrier_line_id}
    by_ref = {row.reference: row for row in lines if row.carrier_line_id is None}
    out: dict[str, DbLine] = {}
    taken: set[int] = set()
    for package in sorted(found, key=lambda p: (p.ordered_at, p.line_id)):
        row = by_id.get(package.line_id)
        if row is None and package.reference is not None:
            row = by_ref.get(package.reference)
            if row is not None and row.seq in taken:
                row = None
        if row is not None:
            out[package.line_id] = row
            taken.add(row.seq)
    return out


def record_as(view: BalanceView, package: CarrierLine) -> tuple[int, str] | None:
    """The seq and our reference under which the database may write a package: its own
    row's; for a package no row knows that carries this balance's reference, that seq
    while no row holds it. Else None: a package carrying no reference gets no guessed
    seq, and a second purchase for a seq never overwrites the row of that seq's line."""
    row = identify(view.lines, [package]).get(package.line_id)
    if row is not None:
        return row.seq, row.reference
    seq = seq_of(package.reference, view.balance_id)
    if seq is None or any(row.seq == seq for row in view.lines):
        return None
    return seq, f"{view.balance_id}:{seq}"


def settle_seconds(view: BalanceView, override: float | None) -> float:
    """How old a carrier change must be before it is judged: the margin, at least 5 s."""
    if override is not None:
        return override
    return max(5.0, view.policy.margin(view.validity_seconds))


def end_state(found: CarrierLine | None) -> str:
    """Our line state for a package the carrier has ended (or does not know)."""
    if found is None:
        return "cancelled"
    if found.activated_at is None:
        return "failed" if found.status == "ended" else "cancelled"
    ended, ends = found.ended_at, found.ends_at
    if ended is not None and ends is not None and ended < ends - timedelta(seconds=1):
        return "cancelled"  # ended before its window did: someone ended it
    return "expired"


def owned_active(view: BalanceView, ours: dict[int, CarrierLine]) -> tuple[int, CarrierLine] | None:
    """The balance's current line at the carrier, with its seq: the one the database
    names, if active, else our active package of the highest seq."""
    seq = view.line_seq
    if seq is not None and seq in ours and ours[seq].status == "active":
        return seq, ours[seq]
    active = [seq for seq, line in ours.items() if line.status == "active"]
    return (max(active), ours[max(active)]) if active else None


def compare(
    view: BalanceView,
    found: list[CarrierLine],
    now: datetime,
    settle: float,
    switch_allowance: float,
) -> list[Finding]:
    """Every disagreement between the database's view of a balance and its carrier."""
    known = identify(view.lines, found)
    ours = _ours(view, found, known)
    old = now - timedelta(seconds=settle)
    findings = [
        *_ghosts(view, known, found, old),
        *_orphans(view, found, known, ours, old),
        *_two_active(view, found, known, ours, now, switch_allowance),
        *_prices(found, known, old),
    ]
    if not view.paused:
        findings += _missing_scheduled(view, known, ours, old)
        findings += _stuck(view, known, ours, old)
    return findings


def _by_age(found: list[CarrierLine]) -> list[CarrierLine]:
    return sorted(found, key=lambda line: (line.ordered_at, line.line_id))


def _ours(
    view: BalanceView, found: list[CarrierLine], known: dict[str, DbLine]
) -> dict[int, CarrierLine]:
    """This balance's packages by seq: each database line's package at the row's seq,
    then a package no row knows that carries this balance's reference at that seq, if
    the seq is free (the first ordered takes it; a later one is a second purchase)."""
    ours = {known[line.line_id].seq: line for line in found if line.line_id in known}
    held = {row.seq for row in view.lines}
    for line in _by_age(found):
        seq = seq_of(line.reference, view.balance_id)
        if line.line_id not in known and seq is not None and seq not in held | set(ours):
            ours[seq] = line
    return ours


def _ghosts(
    view: BalanceView, known: dict[str, DbLine], found: list[CarrierLine], old: datetime
) -> list[Finding]:
    """Rows the database holds open whose package the carrier has ended, or lacks."""
    package_of = {known[line.line_id].seq: line for line in found if line.line_id in known}
    out: list[Finding] = []
    for row in view.lines:
        if row.state not in OPEN_STATES:
            continue
        line = package_of.get(row.seq)
        if line is None:
            if row.ordered_at is None or row.ordered_at > old:
                continue
        elif line.status != "ended" or (line.ended_at or old) > old:
            continue
        out.append(
            Finding(
                kind=Kind.ghost_line,
                subject=row.reference,
                seq=row.seq,
                line_id=row.carrier_line_id,
                reference=row.reference,
                repairs=[Repair.correct_row, Repair.notify],
                detail={
                    "database_state": row.state,
                    "carrier_status": line.status if line else "unknown",
                    "state": end_state(line),
                },
            )
        )
    return out


def _orphans(
    view: BalanceView,
    found: list[CarrierLine],
    known: dict[str, DbLine],
    ours: dict[int, CarrierLine],
    old: datetime,
) -> list[Finding]:
    """Packages on the eSIM that no database line knows, by id or by reference.

    One carrying this balance's reference has the seq of its reference. The seq after
    the newest the database knows is the workflow's order in flight (its answer lost,
    or its worker gone before recording it): the order's retry adopts that package by
    looking before it buys, however long that takes, so it is no orphan. A package
    whose seq is already another package's (a row's, or an earlier orphan's) is a
    second purchase for one line: flagged, never written over that line.

    One carrying no reference gets no seq: it may be a purchase of ours whose answer
    was lost (the order in flight among them: nothing tells it from the others), or one
    made outside the product. It is flagged for an operator, never ended or recorded
    under a guessed seq; one ordered before the balance was opened is not looked at.
    One carrying another balance's reference is not this balance's."""
    in_flight = max((row.seq for row in view.lines), default=0) + 1
    owned = owned_active(view, ours)
    current = owned[1] if owned else None
    out: list[Finding] = []
    for line in _by_age(found):
        if line.line_id in known or line.ordered_at > old:
            continue
        detail: dict[str, Any] = {"carrier_status": line.status, **carrier_price(line)}
        if line.reference is None:
            if view.opened_at is not None and line.ordered_at < view.opened_at:
                continue
            out.append(
                Finding(
                    kind=Kind.orphan_purchase,
                    subject=line.line_id,
                    line_id=line.line_id,
                    repairs=[Repair.flag],
                    detail={**detail, "unmatched": "no reference"},
                )
            )
            continue
        seq = seq_of(line.reference, view.balance_id)
        if seq is None:
            continue
        if ours.get(seq) is not line:
            out.append(
                Finding(
                    kind=Kind.orphan_purchase,
                    subject=line.line_id,
                    seq=seq,
                    line_id=line.line_id,
                    repairs=[Repair.flag],
                    detail={**detail, "unmatched": "seq taken", "carried": line.reference},
                )
            )
            continue
        if seq == in_flight:
            continue
        repairs = [Repair.record_row]
        if line.status == "scheduled" or (line.status == "active" and line is not current):
            # Nobody will activate it (a queued start would, later) or it doubles the
            # balance's current line. The only active line of the balance stays.
            repairs = [Repair.deactivate]
        out.append(
            Finding(
                kind=Kind.orphan_purchase,
                subject=line.reference,
                seq=seq,
                line_id=line.line_id,
                repairs=repairs,
                detail=detail,
            )
        )
    return out


def carrier_price(line: CarrierLine) -> dict[str, Any]:
    """What a package shows of its purchase for a finding's detail: its product, and the
    price the carrier shows it charged where it shows one (``carrier_price_cents`` and
    ``carrier_currency``; most carriers show none on a package, CARRIERS.md)."""
    shown = line.price_cents is not None and line.currency is not None
    return {
        "carrier_product_id": line.carrier_product_id,
        "carrier_price_cents": line.price_cents if shown else None,
        "carrier_currency": line.currency.upper() if shown and line.currency else None,
    }


def _prices(found: list[CarrierLine], known: dict[str, DbLine], old: datetime) -> list[Finding]:
    """The spend ledger against what the carrier shows it sold, package by package.

    Only a row holding the package's id is a purchase the ledger records (a row matched
    by reference alone is being written by its workflow). Such a row with no price is an
    ``unpriced_purchase``: the spend ledger under-reports it. The price is written only
    where the package shows what the carrier charged (certain); else an operator looks.
    Where the package shows a price and the row's (amount or currency) differs, it is a
    ``price_mismatch``: flagged with both figures, never rewritten (money is not
    changed silently). A package shows no price at most carriers (its ``price_cents``
    None): nothing is compared there. Packages younger than ``settle`` wait."""
    out: list[Finding] = []
    for line in _by_age(found):
        row = known.get(line.line_id)
        if row is None or row.carrier_line_id != line.line_id or line.ordered_at > old:
            continue
        shown = carrier_price(line)
        charged = shown["carrier_price_cents"], shown["carrier_currency"]
        base = {"carrier_status": line.status, **shown}
        if row.price_cents is None or row.currency is None:
            out.append(
                Finding(
                    kind=Kind.unpriced_purchase,
                    subject=row.reference,
                    seq=row.seq,
                    line_id=line.line_id,
                    reference=row.reference,
                    repairs=[Repair.flag if charged[0] is None else Repair.record_price],
                    detail=base,
                )
            )
            continue
        recorded = row.price_cents, row.currency.upper()
        if charged[0] is None or charged == recorded:
            continue
        out.append(
            Finding(
                kind=Kind.price_mismatch,
                # Keyed by both figures: the same disagreement is one finding, another
                # (the row or the carrier changed again) is a new one.
                subject=f"{row.reference}:{recorded[0]}{recorded[1]}:{charged[0]}{charged[1]}",
                seq=row.seq,
                line_id=line.line_id,
                reference=row.reference,
                repairs=[Repair.flag],
                detail={
                    **base,
                    "recorded_price_cents": recorded[0],
                    "recorded_currency": recorded[1],
                    "recorded": money_text(*recorded),
                    "carrier": money_text(charged[0], str(charged[1])),
                },
            )
        )
    return out


def money_text(cents: int, currency: str) -> str:
    """``1250, "EUR"`` as ``12.50 EUR``, as the spend ledger says an amount."""
    return f"{money.amount(cents)} {currency}"


def _two_active(
    view: BalanceView,
    found: list[CarrierLine],
    known: dict[str, DbLine],
    ours: dict[int, CarrierLine],
    now: datetime,
    switch_allowance: float,
) -> list[Finding]:
    """More than one active package on the eSIM for longer than a switch may overlap."""
    active = sorted(
        (line for line in found if line.status == "active"),
        key=lambda line: (line.activated_at or line.ordered_at, line.line_id),
    )
    if len(active) < 2:
        return []
    since = active[1].activated_at or active[1].ordered_at
    allowed = view.policy.margin(view.validity_seconds) + switch_allowance
    if (now - since).total_seconds() <= allowed:
        return []
    owned = owned_active(view, ours)
    current = owned[1] if owned else None
    # Only our own packages are ended (a database line's, or one carrying this
    # balance's reference), and only beside the balance's current line.
    extra = [
        line
        for line in active
        if current is not None
        and line is not current
        and (line.line_id in known or seq_of(line.reference, view.balance_id) is not None)
    ]
    row = known.get(current.line_id) if current else None
    return [
        Finding(
            kind=Kind.two_active_lines,
            subject="+".join(line.line_id for line in active),
            seq=owned[0] if owned else None,
            line_id=current.line_id if current else None,
            reference=row.reference if row else None,
            repairs=[Repair.deactivate] if extra else [Repair.flag],
            detail={
                "active": [line.line_id for line in active],
                "references": [_reference(view, line, known) for line in active],
                "kept": current.line_id if current else None,
                "end": [line.line_id for line in extra],
                "overlap_seconds": round((now - since).total_seconds(), 3),
            },
        )
    ]


def _reference(view: BalanceView, line: CarrierLine, known: dict[str, DbLine]) -> str | None:
    """Our reference of a package: its database row's, else the one it carries."""
    row = known.get(line.line_id)
    return row.reference if row else line.reference


def _missing_scheduled(
    view: BalanceView, known: dict[str, DbLine], ours: dict[int, CarrierLine], old: datetime
) -> list[Finding]:
    """Past the current line's order time and nothing ordered after it."""
    owned = owned_active(view, ours)
    if owned is None or owned[1].ends_at is None:
        return []
    seq, current = owned
    assert current.ends_at is not None
    if view.lines_total is not None and max(ours) >= view.lines_total:
        return []  # the term's last line: nothing more is ordered
    if any(s > seq and line.status != "ended" for s, line in ours.items()):
        return []
    lead = view.policy.lead(view.validity_seconds)
    order_at = current.ends_at - timedelta(seconds=lead)
    if order_at > old:
        return []
    row = known.get(current.line_id)
    return [
        Finding(
            kind=Kind.missing_scheduled_line,
            subject=_reference(view, current, known) or current.line_id,
            seq=seq,
            line_id=current.line_id,
            reference=row.reference if row else None,
            repairs=[Repair.notify],
            detail={"order_at": order_at.isoformat(), "ends_at": current.ends_at.isoformat()},
        )
    ]


def _stuck(
    view: BalanceView, known: dict[str, DbLine], ours: dict[int, CarrierLine], old: datetime
) -> list[Finding]:
    """Lines the database knows still scheduled at the carrier after their switch time."""
    owned = owned_active(view, ours)
    margin = timedelta(seconds=view.policy.margin(view.validity_seconds))
    out: list[Finding] = []
    for seq, line in sorted(ours.items()):
        row = known.get(line.line_id)
        if line.status != "scheduled" or row is None:
            continue
        if owned is None:
            switch_at = line.ordered_at + margin  # nothing active: activated right away
        else:
            current_seq, current = owned
            if seq < current_seq or current.ends_at is None:
                continue
            # Boundary passes switch at the boundary itself (see BalanceWorkflow).
            rolling = view.reset == "rolling"
            switch_at = current.ends_at - margin if rolling else current.ends_at
        if switch_at > old:
            continue
        out.append(
            Finding(
                kind=Kind.stuck_scheduled,
                subject=row.reference,
                seq=seq,
                line_id=line.line_id,
                reference=row.reference,
                repairs=[Repair.flag],
                detail={"switch_at": switch_at.isoformat()},
            )
        )
    return out
