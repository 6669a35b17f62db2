"""The audit's comparison of database and carrier, and the restart state, as pure functions.

Most carriers have no field for our reference: their packages come back with
``reference`` None. The tests marked ``BOTH`` run once with packages carrying our
reference and once without (``listed``), and must come out the same: a package is
matched to its database line by the carrier's package id first.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from activities.audit_restart import Known, read_carrier, rebuild_state, while_gone
from carriers.base import CarrierLine
from carriers.errors import CarrierRejected
from models.payloads import LineState, Policy, ProductSpec
from models.tables import Balance
from services.audit_rules import (
    BalanceView,
    DbLine,
    Finding,
    Kind,
    Repair,
    compare,
    identify,
    record_as,
)
from workflows import rotation

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
BID = "bal_000000000001"
ICCID = "89440000000000000017"
# A day pass: lead 1800 s, margin 60 s; settle 5 s in these tests.
DAY = 86400
SETTLE = 5.0


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def package(
    line_id: str,
    seq: int | None,
    status: str,
    activated: float | None = None,
    ordered: float = 3600,
    ended: float | None = None,
    ends_in: float | None = None,
) -> CarrierLine:
    activated_at = ago(activated) if activated is not None else None
    ends_at = NOW + timedelta(seconds=ends_in) if ends_in is not None else None
    if ends_at is None and activated_at is not None:
        ends_at = activated_at + timedelta(seconds=DAY)
    return CarrierLine(
        line_id=line_id,
        iccid=ICCID,
        carrier_product_id="daily-1gb",
        reference=f"{BID}:{seq}" if seq is not None else None,
        status=status,  # type: ignore[arg-type]
        ordered_at=ago(ordered),
        activated_at=activated_at,
        ends_at=ends_at,
        ended_at=ago(ended) if ended is not None else None,
        allowance_bytes=10**9,
    )


BOTH = pytest.mark.parametrize("carried", [True, False], ids=["reference", "no_reference"])


def listed(carried: bool, *found: CarrierLine) -> list[CarrierLine]:
    """The packages as the carrier lists them: with our reference, or (most carriers)
    without any."""
    if carried:
        return list(found)
    return [line.model_copy(update={"reference": None}) for line in found]


def row(seq: int, state: str, line_id: str | None) -> DbLine:
    """A database line; one the carrier holds a package for was priced when ordered."""
    return DbLine(
        seq=seq,
        reference=f"{BID}:{seq}",
        state=state,
        carrier_line_id=line_id,
        ordered_at=ago(3600) if line_id else None,
        price_cents=150 if line_id else None,
        currency="USD" if line_id else None,
    )


def view(*lines: DbLine, line_seq: int | None = 1, **extra: object) -> BalanceView:
    return BalanceView(
        balance_id=BID,
        iccid=ICCID,
        carrier="telna",
        line_seq=line_seq,
        validity_seconds=DAY,
        lines=list(lines),
        **extra,  # type: ignore[arg-type]
    )


def kinds(findings: list[Finding]) -> list[Kind]:
    return [f.kind for f in findings]


@BOTH
def test_a_balance_in_order_has_no_findings(carried: bool) -> None:
    current = package("p1", 1, "active", activated=DAY - 600)  # ends in 10 min
    nxt = package("p2", 2, "scheduled", ordered=1200)
    v = view(row(1, "active", "p1"), row(2, "scheduled", "p2"))
    assert compare(v, listed(carried, current, nxt), NOW, SETTLE, 60) == []


@BOTH
def test_an_active_row_the_carrier_ended_is_a_ghost_corrected_and_notified(
    carried: bool,
) -> None:
    ended = package("p1", 1, "ended", activated=3600, ended=30)
    v = view(row(1, "active", "p1"))
    [finding, *rest] = compare(v, listed(carried, ended), NOW, SETTLE, 60)
    assert finding.kind is Kind.ghost_line and finding.seq == 1
    assert finding.repairs == [Repair.correct_row, Repair.notify]
    assert finding.detail["state"] == "cancelled"  # ended long before its window did
    assert Kind.missing_scheduled_line not in kinds(rest)
    # The workflow's notice names the line by the database's reference.
    assert (finding.reference, finding.subject) == (f"{BID}:1", f"{BID}:1")


@BOTH
def test_a_carrier_change_younger_than_settle_is_not_judged(carried: bool) -> None:
    ended = package("p1", 1, "ended", activated=3600, ended=2)
    assert compare(view(row(1, "active", "p1")), listed(carried, ended), NOW, SETTLE, 60) == []


@BOTH
def test_a_row_whose_package_the_carrier_does_not_know_is_a_ghost(carried: bool) -> None:
    current = package("p1", 1, "active", activated=60)
    v = view(row(1, "active", "p1"), row(2, "scheduled", "p-lost"))
    [finding] = compare(v, listed(carried, current), NOW, SETTLE, 60)
    assert finding.kind is Kind.ghost_line and finding.seq == 2
    assert finding.detail["carrier_status"] == "unknown"
    assert finding.reference == f"{BID}:2"


def test_a_package_is_its_rows_line_by_id_whatever_reference_it_carries() -> None:
    """The id decides: a package echoing another reference, or none, is still line 1."""
    current = package("p1", 1, "active", activated=60)
    for echoed in (None, f"{BID}:7", "someone-else"):
        found = [current.model_copy(update={"reference": echoed})]
        assert compare(view(row(1, "active", "p1")), found, NOW, SETTLE, 60) == []
        assert record_as(view(row(1, "active", "p1")), found[0]) == (1, f"{BID}:1")


def test_a_row_without_a_package_id_is_matched_by_the_reference_a_package_carries() -> None:
    """The row of an order whose package id was not recorded yet: a package carrying its
    reference is that line (no orphan); one carrying none cannot be told from others."""
    current = package("p1", 1, "active", activated=60)
    ordered = package("p2", 2, "scheduled", ordered=600)
    v = view(row(1, "active", "p1"), row(2, "scheduled", None))
    assert identify(v.lines, [current, ordered]) == {"p1": v.lines[0], "p2": v.lines[1]}
    assert compare(v, [current, ordered], NOW, SETTLE, 60) == []
    bare = listed(False, current, ordered)
    assert identify(v.lines, bare) == {"p1": v.lines[0]}
    [finding] = compare(v, bare, NOW, SETTLE, 60)
    assert (finding.kind, finding.seq, finding.repairs) == (
        Kind.orphan_purchase,
        None,
        [Repair.flag],
    )


def test_an_orphan_scheduled_package_carrying_our_reference_is_cancelled() -> None:
    current = package("p1", 1, "active", activated=60)
    orphan = package("p9", 9, "scheduled", ordered=60)
    [finding] = compare(view(row(1, "active", "p1")), [current, orphan], NOW, SETTLE, 60)
    assert (finding.kind, finding.seq, finding.repairs) == (
        Kind.orphan_purchase,
        9,
        [Repair.deactivate],
    )


@BOTH
def test_an_orphan_package_just_ordered_is_left_to_the_workflow(carried: bool) -> None:
    current = package("p1", 1, "active", activated=60)
    fresh = package("p2", 2, "scheduled", ordered=1)
    found = listed(carried, current, fresh)
    assert compare(view(row(1, "active", "p1")), found, NOW, SETTLE, 60) == []


@pytest.mark.parametrize("status", ["scheduled", "active", "ended"])
def test_a_package_no_line_knows_and_carrying_no_reference_is_flagged_never_guessed(
    status: str,
) -> None:
    """No seq is derived for it: not ended, not recorded; an operator looks."""
    current = package("p1", 1, "active", activated=600)
    stray = package("p9", None, status, activated=200 if status != "scheduled" else None)
    v = view(row(1, "active", "p1"))
    found = compare(v, [current, stray], NOW, SETTLE, 60)
    [orphan] = [f for f in found if f.kind is Kind.orphan_purchase]
    assert (orphan.subject, orphan.seq, orphan.line_id) == ("p9", None, "p9")
    assert orphan.repairs == [Repair.flag] and orphan.reference is None
    assert orphan.detail == {
        "carrier_status": status,
        "unmatched": "no reference",
        "carrier_product_id": "daily-1gb",
        "carrier_price_cents": None,  # Telna shows no price on a package
        "carrier_currency": None,
    }
    assert record_as(v, stray) is None  # never written under a guessed seq


def charged(line: CarrierLine, cents: int | None, currency: str | None = "USD") -> CarrierLine:
    """The package as a carrier that shows what it charged for it would list it."""
    return line.model_copy(update={"price_cents": cents, "currency": currency})


def priced(line: DbLine, cents: int | None, currency: str | None = "USD") -> DbLine:
    """The row with the price the spend ledger holds for it (None: never recorded)."""
    return line.model_copy(update={"price_cents": cents, "currency": currency})


@BOTH
def test_a_line_the_carrier_holds_without_a_recorded_price_is_an_unpriced_purchase(
    carried: bool,
) -> None:
    """The spend ledger under-reports it; no carrier shows a price on a package, so the
    audit cannot know what it cost for certain: flagged, naming its product."""
    current = package("p1", 1, "active", activated=600)
    nxt = package("p2", 2, "scheduled", ordered=1200)
    v = view(row(1, "active", "p1"), priced(row(2, "scheduled", "p2"), None, None))
    [finding] = compare(v, listed(carried, current, nxt), NOW, SETTLE, 60)
    assert finding.kind is Kind.unpriced_purchase
    assert (finding.subject, finding.seq, finding.line_id) == (f"{BID}:2", 2, "p2")
    assert finding.reference == f"{BID}:2" and finding.repairs == [Repair.flag]
    assert finding.detail == {
        "carrier_status": "scheduled",
        "carrier_product_id": "daily-1gb",
        "carrier_price_cents": None,
        "carrier_currency": None,
    }
    # A price without its currency is no price either.
    half = view(row(1, "active", "p1"), priced(row(2, "scheduled", "p2"), 150, None))
    assert kinds(compare(half, [current, nxt], NOW, SETTLE, 60)) == [Kind.unpriced_purchase]


def test_an_unpriced_purchase_takes_the_price_its_package_shows() -> None:
    """Where the carrier shows what it charged, that price is certain: recorded."""
    current = charged(package("p1", 1, "active", activated=600), 275, "eur")
    v = view(priced(row(1, "active", "p1"), None, None))
    [finding] = compare(v, [current], NOW, SETTLE, 60)
    assert finding.kind is Kind.unpriced_purchase and finding.repairs == [Repair.record_price]
    assert (finding.detail["carrier_price_cents"], finding.detail["carrier_currency"]) == (
        275,
        "EUR",
    )


def test_unpriced_and_mismatched_wait_for_a_line_the_workflow_is_still_recording() -> None:
    """A package younger than settle, or a row holding no package id yet (matched by our
    reference alone), is being written by its workflow: not judged."""
    fresh = charged(package("p2", 2, "scheduled", ordered=1), 999)
    v = view(row(1, "active", "p1"), priced(row(2, "scheduled", "p2"), None, None))
    current = package("p1", 1, "active", activated=600)
    assert compare(v, [current, fresh], NOW, SETTLE, 60) == []
    pending = view(row(1, "active", "p1"), priced(row(2, "scheduled", None), None, None))
    nxt = package("p2", 2, "scheduled", ordered=1200)
    assert compare(pending, [current, nxt], NOW, SETTLE, 60) == []


@pytest.mark.parametrize(
    ("shown", "recorded"),
    [((150, "USD"), (120, "USD")), ((150, "EUR"), (150, "USD")), ((150, "usd"), (999, "USD"))],
    ids=["amount", "currency", "both"],
)
def test_a_recorded_price_the_carrier_contradicts_is_a_mismatch_flagged_with_both_figures(
    shown: tuple[int, str], recorded: tuple[int, str]
) -> None:
    """Money is never rewritten silently: an operator looks."""
    current = charged(package("p1", 1, "active", activated=600), *shown)
    v = view(priced(row(1, "active", "p1"), *recorded))
    [finding] = compare(v, [current], NOW, SETTLE, 60)
    assert finding.kind is Kind.price_mismatch and finding.repairs == [Repair.flag]
    assert (finding.seq, finding.line_id, finding.reference) == (1, "p1", f"{BID}:1")
    detail = finding.detail
    assert (detail["recorded_price_cents"], detail["recorded_currency"]) == recorded
    assert (detail["carrier_price_cents"], detail["carrier_currency"]) == (
        shown[0],
        shown[1].upper(),
    )
    assert detail["recorded"] == f"{recorded[0] / 100:.2f} {recorded[1]}"
    assert detail["carrier"] == f"{shown[0] / 100:.2f} {shown[1].upper()}"
    # The same disagreement is one finding; another is a new one.
    [again] = compare(v, [current], NOW + timedelta(hours=1), SETTLE, 60)
    assert again.subject == finding.subject
    other = view(priced(row(1, "active", "p1"), recorded[0] + 1, recorded[1]))
    assert compare(other, [current], NOW, SETTLE, 60)[0].subject != finding.subject


def test_a_price_the_carrier_agrees_with_or_does_not_show_is_no_finding() -> None:
    agreed = charged(package("p1", 1, "active", activated=600), 150, "usd")
    silent = package("p2", 2, "scheduled", ordered=1200)  # most carriers: no price shown
    v = view(row(1, "active", "p1"), priced(row(2, "scheduled", "p2"), 1, "JPY"))
    assert compare(v, [agreed, silent], NOW, SETTLE, 60) == []


def test_an_orphan_names_the_price_its_package_shows() -> None:
    """The money at stake in a purchase no line of ours holds is visible."""
    current = package("p1", 1, "active", activated=600)
    stray = charged(package("p9", None, "scheduled"), 199, "GBP")
    [orphan] = compare(view(row(1, "active", "p1")), [current, stray], NOW, SETTLE, 60)
    assert orphan.kind is Kind.orphan_purchase
    assert (orphan.detail["carrier_price_cents"], orphan.detail["carrier_currency"]) == (
        199,
        "GBP",
    )
    assert orphan.detail["carrier_product_id"] == "daily-1gb"


def test_a_package_without_reference_ordered_before_the_balance_opened_is_not_its_own() -> None:
    """The eSIM's earlier balances' packages (or the carrier's own) are not orphans."""
    current = package("p1", 1, "active", activated=60)
    earlier = package("p0", None, "ended", activated=DAY * 2, ordered=DAY * 3, ended=DAY)
    v = view(row(1, "active", "p1"), opened_at=ago(DAY))
    assert compare(v, [current, earlier], NOW, SETTLE, 60) == []
    since = view(row(1, "active", "p1"), opened_at=ago(DAY * 4))
    assert kinds(compare(since, [current, earlier], NOW, SETTLE, 60)) == [Kind.orphan_purchase]


def test_a_second_package_for_a_line_the_database_holds_is_flagged_not_written_over_it() -> None:
    """Bought twice for seq 2: the row keeps its package; the other is never its line."""
    current = package("p1", 1, "active", activated=60)
    ordered = package("p2", 2, "scheduled", ordered=1200)
    twice = package("p2b", 2, "scheduled", ordered=600)
    v = view(row(1, "active", "p1"), row(2, "scheduled", "p2"))
    [finding] = compare(v, [current, ordered, twice], NOW, SETTLE, 60)
    assert (finding.kind, finding.subject, finding.seq) == (Kind.orphan_purchase, "p2b", 2)
    assert finding.repairs == [Repair.flag] and finding.detail["unmatched"] == "seq taken"
    assert record_as(v, twice) is None
    assert record_as(v, package("p5", 5, "scheduled")) == (5, f"{BID}:5")


def test_the_next_line_ordered_long_ago_is_the_workflows_order_in_flight() -> None:
    """Its worker died after the carrier took the order: the retry adopts the package."""
    current = package("p1", 1, "active", activated=60)
    ordered = package("p2", 2, "scheduled", ordered=600)
    assert compare(view(row(1, "active", "p1")), [current, ordered], NOW, SETTLE, 60) == []
    beyond = package("p3", 3, "scheduled", ordered=600)
    [finding] = compare(view(row(1, "active", "p1")), [current, beyond], NOW, SETTLE, 60)
    assert (finding.kind, finding.seq) == (Kind.orphan_purchase, 3)
    # Without a reference nothing tells the order in flight from a stray package: both
    # are flagged only (harmless to the retry, which adopts it by its own look).
    bare = compare(view(row(1, "active", "p1")), listed(False, current, ordered), NOW, SETTLE, 60)
    assert [(f.kind, f.seq, f.repairs) for f in bare] == [
        (Kind.orphan_purchase, None, [Repair.flag])
    ]


def test_the_only_active_line_is_recorded_never_ended() -> None:
    orphan = package("p3", 3, "active", activated=60)
    [finding] = compare(view(line_seq=None), [orphan], NOW, SETTLE, 60)
    assert finding.kind is Kind.orphan_purchase and finding.repairs == [Repair.record_row]
    assert record_as(view(line_seq=None), orphan) == (3, f"{BID}:3")


def test_two_active_lines_past_the_allowed_overlap_end_the_one_not_current() -> None:
    current = package("p1", 1, "active", activated=600)
    orphan = package("p9", 9, "active", activated=200)
    foreign = package("x1", 1, "active", activated=300).model_copy(
        update={"reference": "bal_someone_else:1"}
    )
    found = compare(view(row(1, "active", "p1")), [current, orphan, foreign], NOW, SETTLE, 60)
    assert kinds(found) == [Kind.orphan_purchase, Kind.two_active_lines]
    two = found[1]
    assert two.detail["kept"] == "p1" and two.detail["end"] == ["p9"]  # never the foreign one
    assert two.repairs == [Repair.deactivate]
    assert two.reference == f"{BID}:1"


def test_two_active_lines_without_references_end_only_a_line_the_database_knows() -> None:
    """Nothing tells whose a package carrying no reference is: the database's own second
    active line is ended beside the current one; an unknown one is only flagged."""
    current = package("p1", 1, "active", activated=600)
    second = package("p2", 2, "active", activated=200)
    stray = package("x1", None, "active", activated=300)
    v = view(row(1, "active", "p1"), row(2, "active", "p2"))
    found = compare(v, listed(False, current, second, stray), NOW, SETTLE, 60)
    assert kinds(found) == [Kind.orphan_purchase, Kind.two_active_lines]
    orphan, two = found
    assert (orphan.subject, orphan.repairs) == ("x1", [Repair.flag])
    assert two.detail["kept"] == "p1" and two.detail["end"] == ["p2"]
    assert two.detail["references"] == [f"{BID}:1", None, f"{BID}:2"]
    alone = compare(view(row(1, "active", "p1")), listed(False, current, stray), NOW, SETTLE, 60)
    assert kinds(alone) == [Kind.orphan_purchase, Kind.two_active_lines]
    assert alone[1].repairs == [Repair.flag] and alone[1].detail["end"] == []


@BOTH
def test_two_active_lines_within_a_switch_are_fine(carried: bool) -> None:
    old = package("p1", 1, "active", activated=DAY - 30)
    new = package("p2", 2, "active", activated=20)
    v = view(row(1, "active", "p1"), row(2, "active", "p2"), line_seq=1)
    assert Kind.two_active_lines not in kinds(
        compare(v, listed(carried, old, new), NOW, SETTLE, 60)
    )


@BOTH
def test_past_order_time_without_a_scheduled_line_is_missing(carried: bool) -> None:
    current = package("p1", 1, "active", activated=DAY - 600)  # order_at was 20 min ago
    [finding] = compare(view(row(1, "active", "p1")), listed(carried, current), NOW, SETTLE, 60)
    assert finding.kind is Kind.missing_scheduled_line and finding.repairs == [Repair.notify]
    assert (finding.seq, finding.subject, finding.reference) == (1, f"{BID}:1", f"{BID}:1")


@BOTH
def test_nothing_is_missing_before_order_time_on_the_last_line_or_when_paused(
    carried: bool,
) -> None:
    early = listed(carried, package("p1", 1, "active", activated=600))
    assert compare(view(row(1, "active", "p1")), early, NOW, SETTLE, 60) == []
    late = listed(carried, package("p1", 1, "active", activated=DAY - 600))
    last = view(row(1, "active", "p1"), lines_total=1)
    assert compare(last, late, NOW, SETTLE, 60) == []
    paused = view(row(1, "active", "p1"), paused=True)
    assert compare(paused, late, NOW, SETTLE, 60) == []


@BOTH
def test_a_line_still_scheduled_after_its_switch_time_is_stuck(carried: bool) -> None:
    current = package("p1", 1, "active", activated=DAY - 30)  # switch_at was 30 s ago
    waiting = package("p2", 2, "scheduled", ordered=1800)
    v = view(row(1, "active", "p1"), row(2, "scheduled", "p2"))
    [finding] = compare(v, listed(carried, current, waiting), NOW, SETTLE, 60)
    assert finding.kind is Kind.stuck_scheduled and finding.repairs == [Repair.flag]
    assert (finding.seq, finding.subject, finding.line_id) == (2, f"{BID}:2", "p2")


DAILY = ProductSpec(
    id="telna-daily-1gb",
    carrier="telna",
    carrier_product_id="daily-1gb",
    allowance_bytes=10**9,
    validity_seconds=DAY,
)


def open_balance(**row: object) -> Balance:
    """The open balance the restart tests rebuild, on line 2 of DAILY."""
    return Balance(
        id=BID,
        iccid=ICCID,
        open_iccid=ICCID,
        carrier="telna",
        product_id=DAILY.id,
        workflow_id=f"balance-{ICCID}",
        line_seq=2,
        **row,
    )


def rows(*lines: tuple[int, str, str | None]) -> list[DbLine]:
    """The balance's lines as ``read_known`` reads them: (seq, state, package id)."""
    return [
        DbLine(seq=seq, reference=f"{BID}:{seq}", state=state, carrier_line_id=line_id)
        for seq, state, line_id in lines
    ]


@BOTH
def test_a_restart_adopts_the_current_and_scheduled_lines_and_numbers_after_all_seen(
    carried: bool,
) -> None:
    product = DAILY
    balance = open_balance(rotations=1, policy={"margin_seconds": 30}, revision=41)
    lines = rows((1, "active", "p1"), (2, "active", "p2"), (3, "scheduled", "p3"))
    known = Known(balance, product, None, {"daily-1gb": product}, 3, 17, ["p1", "p2", "p3"], lines)
    found = listed(
        carried,
        package("p1", 1, "ended", activated=DAY + 60, ended=60),
        package("p2", 2, "active", activated=DAY - 700),
        package("p3", 3, "scheduled", ordered=100),
        package("x", None, "active", activated=10),
    )
    state = rebuild_state(known, found, NOW)
    assert state.active is not None and state.active.seq == 2
    assert state.active.state is LineState.active and state.active.line_id == "p2"
    assert state.scheduled is not None and state.scheduled.seq == 3
    assert [line.seq for line in state.archived] == [1]
    # Each line under the database's reference, whatever the carrier carries.
    assert [state.active.reference, state.scheduled.reference] == [f"{BID}:2", f"{BID}:3"]
    assert state.archived[0].reference == f"{BID}:1"
    assert (state.last_seq, state.event_counter, state.rotations) == (3, 17, 1)
    assert state.policy == Policy(margin_seconds=30)
    # Past the row's revision, and past a write the gone run may still have in flight.
    assert state.revision == 42


def test_a_restart_keeps_what_the_balances_lines_cost() -> None:
    """The spend the gone run counted, read back from the lines' prices: all of it, and
    today's (UTC) for the day's cap; a line bought before prices were kept counts in
    neither."""
    product, balance = DAILY, open_balance()
    lines = rows((1, "expired", "p1"), (2, "active", "p2"))
    prices = [(ago(DAY + 60), 150, "USD"), (ago(600), 175, "USD"), (ago(60), 90, "EUR")]
    known = Known(
        balance, product, None, {"daily-1gb": product}, 2, 5, ["p2"], lines, prices=prices
    )
    found = [package("p2", 2, "active", activated=DAY - 700)]
    state = rebuild_state(known, found, NOW)
    assert state.spend_cents == {"USD": 325, "EUR": 90}
    assert (state.spend_day, state.spend_today_cents) == (NOW.date(), {"USD": 175, "EUR": 90})


class RecentOnly:
    """A carrier whose list shows an eSIM's newest package only; a package is read by id."""

    def __init__(self, packages: list[CarrierLine]) -> None:
        self.packages = {p.line_id: p for p in packages}
        self.read: list[str] = []

    async def find_lines(self, iccid: str) -> list[CarrierLine]:
        return list(self.packages.values())[-1:]

    async def get_line(self, line_id: str) -> CarrierLine:
        self.read.append(line_id)
        if line_id not in self.packages:
            raise CarrierRejected("telna", "no such package", "404")
        return self.packages[line_id]


@BOTH
async def test_a_restart_reads_the_open_lines_a_short_list_leaves_out(carried: bool) -> None:
    """The carrier lists only the newest package (a scheduled one): the active line the
    database holds is read by its id, so it is adopted, not bought again."""
    product, balance = DAILY, open_balance()
    carrier = RecentOnly(
        listed(
            carried,
            package("p2", 2, "active", activated=DAY - 700),
            package("p3", 3, "scheduled"),
        )
    )
    lines = rows((1, "expired", "p1"), (2, "active", "p2"), (3, "scheduled", "p3"))
    known = Known(
        balance,
        product,
        None,
        {"daily-1gb": product},
        3,
        9,
        open_line_ids=["p2", "p3", "gone"],
        lines=lines,
    )
    found = await read_carrier(carrier, ICCID, known)  # type: ignore[arg-type]
    assert carrier.read == ["p2", "gone"]
    state = rebuild_state(known, found, NOW)
    assert state.active is not None and state.active.line_id == "p2"
    assert state.scheduled is not None and state.scheduled.line_id == "p3"
    assert state.last_seq == 3


@BOTH
def test_a_restart_adopts_no_package_the_database_does_not_know(carried: bool) -> None:
    """An unknown package gets no seq and is not adopted, even one carrying our reference
    (the audit finds it later); the next order is numbered after the database's lines."""
    product, balance = DAILY, open_balance()
    lines = rows((1, "expired", "p1"), (2, "active", "p2"))
    known = Known(balance, product, None, {"daily-1gb": product}, 2, 5, ["p2"], lines)
    found = listed(
        carried,
        package("p2", 2, "active", activated=DAY - 700),
        package("p3", 3, "scheduled", ordered=600),  # an answer that never came back
        package("p7", 7, "scheduled", ordered=300),
        package("x", None, "active", activated=100),  # made outside the product
    )
    state = rebuild_state(known, found, NOW)
    assert state.active is not None and (state.active.seq, state.active.line_id) == (2, "p2")
    assert state.active.reference == f"{BID}:2"
    assert state.scheduled is None and state.archived == []
    assert state.last_seq == 2


def test_a_restart_takes_a_row_without_package_id_by_the_reference_a_package_carries() -> None:
    """A row whose package id was never recorded is its package's line only where the
    carrier carries our reference; without one it is not guessed."""
    product, balance = DAILY, open_balance()
    lines = rows((1, "expired", "p1"), (2, "active", "p2"), (3, "scheduled", None))
    known = Known(balance, product, None, {"daily-1gb": product}, 3, 5, ["p2"], lines)
    current = package("p2", 2, "active", activated=DAY - 700)
    ordered = package("p3", 3, "scheduled", ordered=600)
    state = rebuild_state(known, [current, ordered], NOW)
    assert state.scheduled is not None and state.scheduled.line_id == "p3"
    assert state.scheduled.reference == f"{BID}:3"
    bare = rebuild_state(known, listed(False, current, ordered), NOW)
    assert bare.active is not None and bare.scheduled is None and bare.last_seq == 3


@BOTH
def test_a_restart_writes_what_the_carrier_did_while_no_workflow_ran(carried: bool) -> None:
    """Terminated holding line 2 active and line 3 ordered: meanwhile line 2 ended by time
    and the carrier started line 3 on its own. The new run adopts line 3 and writes both
    moves, with their events, so the database and the ledger agree with the carrier."""
    product, balance = DAILY, open_balance()
    lines = rows((1, "expired", "p1"), (2, "active", "p2"), (3, "scheduled", "p3"))
    known = Known(balance, product, None, {"daily-1gb": product}, 3, 5, ["p2", "p3"], lines)
    found = listed(
        carried,
        package("p1", 1, "ended", activated=2 * DAY, ended=DAY),
        package("p2", 2, "ended", activated=DAY + 60, ended=60),
        package("p3", 3, "active", activated=60),
    )
    moved, started = while_gone(known, found)
    assert [(line.seq, line.state) for line in moved] == [
        (2, LineState.expired),
        (3, LineState.active),
    ]
    assert started == [3]
    state = rebuild_state(known, found, NOW)
    changes = rotation.restored(state, NOW, moved, started)
    assert [line.seq for line in changes.lines] == [2, 3]
    assert [(e.kind, e.seq, e.actor) for e in changes.events] == [
        ("expired", 2, "workflow"),
        ("activated", 3, "carrier"),
    ]
    assert [e.kind for e in state.pending_events] == ["restored"]
    # Nothing moved: nothing more than the adopted lines is written.
    still = listed(carried, package("p2", 2, "active", activated=DAY - 700))
    assert while_gone(known, still) == ([], [])
