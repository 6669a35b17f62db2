"""The audit's comparison of database and carrier, and the restart state, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from activities.audit_restart import Known, read_carrier, rebuild_state
from carriers.base import CarrierLine
from carriers.errors import CarrierRejected
from models.payloads import LineState, Policy, ProductSpec
from models.tables import Balance
from services.audit_rules import BalanceView, DbLine, Kind, Repair, compare

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


def row(seq: int, state: str, line_id: str) -> DbLine:
    return DbLine(
        seq=seq,
        reference=f"{BID}:{seq}",
        state=state,
        carrier_line_id=line_id,
        ordered_at=ago(3600),
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


def kinds(findings: list) -> list[Kind]:  # type: ignore[type-arg]
    return [f.kind for f in findings]


def test_a_balance_in_order_has_no_findings() -> None:
    current = package("p1", 1, "active", activated=DAY - 600)  # ends in 10 min
    nxt = package("p2", 2, "scheduled", ordered=1200)
    v = view(row(1, "active", "p1"), row(2, "scheduled", "p2"))
    assert compare(v, [current, nxt], NOW, SETTLE, 60) == []


def test_an_active_row_the_carrier_ended_is_a_ghost_corrected_and_notified() -> None:
    ended = package("p1", 1, "ended", activated=3600, ended=30)
    [finding, *rest] = compare(view(row(1, "active", "p1")), [ended], NOW, SETTLE, 60)
    assert finding.kind is Kind.ghost_line and finding.seq == 1
    assert finding.repairs == [Repair.correct_row, Repair.notify]
    assert finding.detail["state"] == "cancelled"  # ended long before its window did
    assert Kind.missing_scheduled_line not in kinds(rest)


def test_a_carrier_change_younger_than_settle_is_not_judged() -> None:
    ended = package("p1", 1, "ended", activated=3600, ended=2)
    assert compare(view(row(1, "active", "p1")), [ended], NOW, SETTLE, 60) == []


def test_a_row_whose_package_the_carrier_does_not_know_is_a_ghost() -> None:
    current = package("p1", 1, "active", activated=60)
    v = view(row(1, "active", "p1"), row(2, "scheduled", "p-lost"))
    [finding] = compare(v, [current], NOW, SETTLE, 60)
    assert finding.kind is Kind.ghost_line and finding.seq == 2
    assert finding.detail["carrier_status"] == "unknown"


def test_an_orphan_scheduled_package_is_cancelled() -> None:
    current = package("p1", 1, "active", activated=60)
    orphan = package("p9", 9, "scheduled", ordered=60)
    [finding] = compare(view(row(1, "active", "p1")), [current, orphan], NOW, SETTLE, 60)
    assert (finding.kind, finding.seq, finding.repairs) == (
        Kind.orphan_purchase,
        9,
        [Repair.deactivate],
    )


def test_an_orphan_package_just_ordered_is_left_to_the_workflow() -> None:
    current = package("p1", 1, "active", activated=60)
    fresh = package("p2", 2, "scheduled", ordered=1)
    assert compare(view(row(1, "active", "p1")), [current, fresh], NOW, SETTLE, 60) == []


def test_the_next_line_ordered_long_ago_is_the_workflows_order_in_flight() -> None:
    """Its worker died after the carrier took the order: the retry adopts the package."""
    current = package("p1", 1, "active", activated=60)
    ordered = package("p2", 2, "scheduled", ordered=600)
    assert compare(view(row(1, "active", "p1")), [current, ordered], NOW, SETTLE, 60) == []
    beyond = package("p3", 3, "scheduled", ordered=600)
    [finding] = compare(view(row(1, "active", "p1")), [current, beyond], NOW, SETTLE, 60)
    assert (finding.kind, finding.seq) == (Kind.orphan_purchase, 3)


def test_the_only_active_line_is_recorded_never_ended() -> None:
    orphan = package("p3", 3, "active", activated=60)
    [finding] = compare(view(line_seq=None), [orphan], NOW, SETTLE, 60)
    assert finding.kind is Kind.orphan_purchase and finding.repairs == [Repair.record_row]


def test_two_active_lines_past_the_allowed_overlap_end_the_one_not_current() -> None:
    current = package("p1", 1, "active", activated=600)
    orphan = package("p9", 9, "active", activated=200)
    foreign = package("x1", None, "active", activated=300)
    found = compare(view(row(1, "active", "p1")), [current, orphan, foreign], NOW, SETTLE, 60)
    assert kinds(found) == [Kind.orphan_purchase, Kind.two_active_lines]
    two = found[1]
    assert two.detail["kept"] == "p1" and two.detail["end"] == ["p9"]  # never the foreign one
    assert two.repairs == [Repair.deactivate]


def test_two_active_lines_within_a_switch_are_fine() -> None:
    old = package("p1", 1, "active", activated=DAY - 30)
    new = package("p2", 2, "active", activated=20)
    v = view(row(1, "active", "p1"), row(2, "active", "p2"), line_seq=1)
    assert Kind.two_active_lines not in kinds(compare(v, [old, new], NOW, SETTLE, 60))


def test_past_order_time_without_a_scheduled_line_is_missing() -> None:
    current = package("p1", 1, "active", activated=DAY - 600)  # order_at was 20 min ago
    [finding] = compare(view(row(1, "active", "p1")), [current], NOW, SETTLE, 60)
    assert finding.kind is Kind.missing_scheduled_line and finding.repairs == [Repair.notify]


def test_nothing_is_missing_before_order_time_on_the_last_line_or_when_paused() -> None:
    early = package("p1", 1, "active", activated=600)
    assert compare(view(row(1, "active", "p1")), [early], NOW, SETTLE, 60) == []
    late = package("p1", 1, "active", activated=DAY - 600)
    last = view(row(1, "active", "p1"), lines_total=1)
    assert compare(last, [late], NOW, SETTLE, 60) == []
    paused = view(row(1, "active", "p1"), paused=True)
    assert compare(paused, [late], NOW, SETTLE, 60) == []


def test_a_line_still_scheduled_after_its_switch_time_is_stuck() -> None:
    current = package("p1", 1, "active", activated=DAY - 30)  # switch_at was 30 s ago
    waiting = package("p2", 2, "scheduled", ordered=1800)
    v = view(row(1, "active", "p1"), row(2, "scheduled", "p2"))
    [finding] = compare(v, [current, waiting], NOW, SETTLE, 60)
    assert finding.kind is Kind.stuck_scheduled and finding.repairs == [Repair.flag]


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


def test_a_restart_adopts_the_current_and_scheduled_lines_and_numbers_after_all_seen() -> None:
    product = DAILY
    balance = open_balance(rotations=1, policy={"margin_seconds": 30}, revision=41)
    known = Known(balance, product, None, {"daily-1gb": product}, max_seq=3, event_counter=17)
    found = [
        package("p1", 1, "ended", activated=DAY + 60, ended=60),
        package("p2", 2, "active", activated=DAY - 700),
        package("p3", 3, "scheduled", ordered=100),
        package("x", None, "active", activated=10),
    ]
    state = rebuild_state(known, found, NOW)
    assert state.active is not None and state.active.seq == 2
    assert state.active.state is LineState.active and state.active.line_id == "p2"
    assert state.scheduled is not None and state.scheduled.seq == 3
    assert [line.seq for line in state.archived] == [1]
    assert (state.last_seq, state.event_counter, state.rotations) == (3, 17, 1)
    assert state.policy == Policy(margin_seconds=30)
    # Past the row's revision, and past a write the gone run may still have in flight.
    assert state.revision == 42


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


async def test_a_restart_reads_the_open_lines_a_short_list_leaves_out() -> None:
    """The carrier lists only the newest package (a scheduled one): the active line the
    database holds is read by its id, so it is adopted, not bought again."""
    product, balance = DAILY, open_balance()
    carrier = RecentOnly(
        [package("p2", 2, "active", activated=DAY - 700), package("p3", 3, "scheduled")]
    )
    known = Known(
        balance, product, None, {"daily-1gb": product}, 3, 9, open_line_ids=["p2", "p3", "gone"]
    )
    found = await read_carrier(carrier, ICCID, known)  # type: ignore[arg-type]
    assert carrier.read == ["p2", "gone"]
    state = rebuild_state(known, found, NOW)
    assert state.active is not None and state.active.line_id == "p2"
    assert state.scheduled is not None and state.scheduled.line_id == "p3"
    assert state.last_seq == 3
