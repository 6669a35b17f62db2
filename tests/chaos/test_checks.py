"""The soak's judges catch what they are there to catch (planted carrier records)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.chaos import checks
from tests.chaos.checks import DbEvent, DbLine

T0 = datetime(2030, 1, 1, tzinfo=UTC)
ICCID = "8944000000000000001"
OTHER = "8944000000000000002"


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat()


def entry(action: str, seconds: float, package: str, reference: str | None) -> dict[str, Any]:
    return {
        "at": at(seconds),
        "action": action,
        "iccid": ICCID,
        "package_id": package,
        "reference": reference,
        "product_id": "compressed-30s",
    }


def chain(switch_overlap: float = 0.5) -> list[dict[str, Any]]:
    """Two lines handed over with an overlap, the second ended at 50 s."""
    return [
        entry("order", 0, "p1", "b:1"),
        entry("activate", 1, "p1", "b:1"),
        entry("order", 10, "p2", "b:2"),
        entry("activate", 20, "p2", "b:2"),
        entry("deactivate", 20 + switch_overlap, "p1", "b:1"),
        entry("deactivate", 50, "p2", "b:2"),
    ]


def db(states: tuple[str, str] = ("cancelled", "cancelled")) -> list[DbLine]:
    return [
        DbLine("b", ICCID, 1, "b:1", "p1", states[0], T0),
        DbLine("b", ICCID, 2, "b:2", "p2", states[1], T0),
    ]


def ledger(*kinds: tuple[int, str]) -> list[DbEvent]:
    return [DbEvent(f"b:{n}", "b", seq, kind) for n, (seq, kind) in enumerate(kinds, 1)]


FULL = ledger((1, "ordered"), (1, "activated"), (2, "ordered"), (2, "activated"))
FULL += [DbEvent("b:5", "b", 1, "cancelled"), DbEvent("b:6", "b", 2, "cancelled")]


def test_a_clean_chain_passes_every_check() -> None:
    entries = chain()
    spans = checks.active_spans(entries, T0 + timedelta(seconds=60))
    assert checks.duplicate_orders(entries, db(), {ICCID}) == []
    assert checks.overlaps(spans, 70) == ([], 0.5)
    assert checks.agreement(entries, db(), {ICCID}) == []
    assert checks.missing_ledger_events(entries, db(), FULL) == []


def without_references(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**e, "reference": None} for e in entries]


# (what the carrier recorded beyond the clean chain, what the database holds, the report)
PURCHASES: dict[str, tuple[list[dict[str, Any]], list[DbLine], list[str]]] = {
    "references null, every order a line of ours": (
        without_references(chain()),
        db(),
        [],
    ),
    "a second purchase of a reference": (
        [*chain(), entry("order", 11, "p3", "b:2")],
        db(),
        [
            "reference b:2 bought 2 times",
            f"{ICCID}: package p3 bought at {at(11)}, held by no line of ours",
        ],
    ),
    "a purchase made twice without a reference": (
        without_references([*chain(), entry("order", 11, "p3", "b:2")]),
        db(),
        [f"{ICCID}: package p3 bought at {at(11)}, held by no line of ours"],
    ),
    # The order's answer was lost; its retry found the package and the line holds it.
    "a lost response adopted": (
        without_references([*chain()[:2], entry("order", 10, "p2", None)]),
        db()[:1] + [DbLine("b", ICCID, 2, "b:2", "p2", "scheduled", None)],
        [],
    ),
    # The audit wrote down a package bought twice for line 2: the row of seq 2 holds
    # one of the two, and the other is still reported.
    "a duplicate the audit recorded over line 2": (
        without_references([*chain(), entry("order", 11, "p3", None)]),
        [db()[0], DbLine("b", ICCID, 2, "b:2", "p3", "cancelled", None)],
        [f"{ICCID}: package p2 bought at {at(10)}, held by no line of ours"],
    ),
    "a line's package bought on another eSIM": (
        without_references([*chain()[:4], {**entry("order", 30, "p3", None), "iccid": OTHER}]),
        [*db(), DbLine("b", ICCID, 3, "b:3", "p3", "scheduled", None)],
        [f"{OTHER}: package p3 bought at {at(30)}, held by no line of ours"],
    ),
    "one package id named by two purchases": (
        without_references([*chain(), entry("order", 11, "p2", None)]),
        db(),
        [
            f"balance b: 3 purchases for its 2 lines (p1 at {at(0)} for line 1,"
            f" p2 at {at(10)} for line 2, p2 at {at(11)} for line 2)"
        ],
    ),
    "purchases on eSIMs not ours": (
        [{**e, "iccid": "8944000000000000099"} for e in chain()],
        [],
        [],
    ),
}


@pytest.mark.parametrize("case", PURCHASES)
def test_a_purchase_made_twice_is_reported_with_or_without_references(case: str) -> None:
    entries, lines, expected = PURCHASES[case]
    assert checks.duplicate_orders(entries, lines, {ICCID, OTHER}) == expected


def test_a_long_overlap_is_reported() -> None:
    spans = checks.active_spans(chain(switch_overlap=25), T0 + timedelta(seconds=60))
    problems, longest = checks.overlaps(spans, 20)
    assert longest == 25 and len(problems) == 1


def test_gaps_and_throttling_are_measured_from_the_timeline() -> None:
    intervals = [
        {"state": "high_speed", "start": at(0), "end": at(10)},
        {"state": "none", "start": at(10), "end": at(10.001)},  # a boundary's rounding
        {"state": "high_speed", "start": at(10.001), "end": at(20)},
        {"state": "throttled", "start": at(20), "end": at(23)},
        {"state": "none", "start": at(23), "end": at(25)},
        {"state": "high_speed", "start": at(25), "end": None},
    ]
    gap, throttled, high = checks.coverage(intervals, T0 + timedelta(seconds=30))
    assert (round(gap, 3), throttled, round(high, 3)) == (2.0, 3.0, 24.999)


def test_database_and_carrier_disagreeing_is_reported() -> None:
    entries = chain()
    still_active = checks.agreement(entries, db(("cancelled", "active")), {ICCID})
    assert still_active == [
        f"{ICCID}: line 2 ended at the carrier, active here",
        f"{ICCID}: line 2 active here, not at the carrier",
    ]
    unknown = checks.agreement([*entries, entry("order", 30, "p9", "b:3")], db(), {ICCID})
    assert unknown == [f"{ICCID}: package p9 bought but not in the database"]


def test_a_missing_ledger_event_is_reported() -> None:
    without_activation = [e for e in FULL if (e.seq, e.kind) != (2, "activated")]
    assert checks.missing_ledger_events(chain(), db(), without_activation) == [
        f"{ICCID}: no activated event for activate of line 2",
        "balance b: ledger events [4] missing",
    ]


def test_only_the_runs_terminated_on_purpose_may_be_terminated() -> None:
    runs = [
        checks.Run("balance-1", "r1", "BalanceWorkflow", "CONTINUED_AS_NEW"),
        checks.Run("balance-1", "r2", "BalanceWorkflow", "TERMINATED"),
        checks.Run("balance-1", "r3", "BalanceWorkflow", "COMPLETED"),
        checks.Run("balance-2", "r4", "BalanceWorkflow", "TERMINATED"),
        checks.Run("balance-3", "r5", "BalanceWorkflow", "FAILED"),
        checks.Run("balance-4", "r6", "BalanceWorkflow", "RUNNING"),
        checks.Run("usage-poll-telna", "r7", "UsagePollWorkflow", "RUNNING"),
    ]
    assert checks.improper_runs(runs[:3], {("balance-1", "r2")}) == []
    assert checks.improper_runs(runs, {("balance-1", "r2"), ("balance-5", "r8")}) == [
        "workflow balance-2 run r4: TERMINATED",
        "workflow balance-3 run r5: FAILED",
        "workflow balance-4 still running after its cancel",
        "workflow balance-5 run r8: terminated, not listed so",
    ]


def test_a_balance_enrolled_again_must_have_continued() -> None:
    events = [*FULL, DbEvent("b:7", "b", None, "restored"), DbEvent("c:1", "c", 1, "ordered")]
    audit = DbEvent("audit:d:missing_workflow:r", "d", None, "audit_missing_workflow")
    assert checks.not_continued([*events, audit], ["b", "d"]) == []
    assert checks.not_continued(events, ["b", "c"]) == [
        "balance c: enrolled again, but no restored event"
    ]


WORKER_LOG = """\
2030-01-01 10:00:00,100 worker worker polling task queue esim-balance
2030-01-01 10:00:01,250 temporalio.activity Completing activity as failed ({'activity_id': '1', \
'activity_type': 'order_line', 'attempt': 1, 'workflow_id': 'balance-1'})
Traceback (most recent call last):
httpx.ReadTimeout
carriers.errors.CarrierOutcomeUnknown: telna: POST /pcr/packages: ReadTimeout('')
temporalio.exceptions.ApplicationError: CarrierOutcomeUnknown: telna: POST /pcr/packages: \
ReadTimeout('')
2030-01-01 10:00:02,000 temporalio.activity Completing activity as failed ({'activity_id': '2', \
'activity_type': 'activate_line', 'attempt': 1, 'workflow_id': 'balance-1'})
Traceback (most recent call last):
temporalio.exceptions.ApplicationError: CarrierUnavailable: telna: POST /x: HTTP 503
2030-01-01 10:00:03,000 temporalio.activity adopting p1 for b:1 ({'activity_id': '1', \
'activity_type': 'order_line', 'attempt': 2})
2030-01-01 10:00:04,500 temporalio.activity Completing activity as failed ({'activity_id': '3', \
'activity_type': 'poll_usage', 'attempt': 1})
temporalio.exceptions.ApplicationError: CarrierUnavailable: webbing: GetDeviceUsage: \
ReadTimeout('')
"""


def test_client_timeouts_are_read_from_the_worker_log() -> None:
    assert checks.client_timeouts(WORKER_LOG) == [
        checks.Timeout(datetime(2030, 1, 1, 10, 0, 1, 250000), "order_line"),
        checks.Timeout(datetime(2030, 1, 1, 10, 0, 4, 500000), "poll_usage"),
    ]


def test_a_carrier_replacing_products_in_place_is_matched_by_when_a_pass_took_effect() -> None:
    """Webbing keeps no id per pass: the simulator's own package ids are matched to our
    lines by the moment each change took effect (``bench.purchases.package_lines``)."""
    entries = [
        entry("order", 1, "w1", None),
        entry("activate", 1, "w1", None),
        entry("order", 20, "w2", None),
        entry("activate", 20, "w2", None),
        entry("deactivate", 20, "w1", None),
    ]
    lines = [
        DbLine("b", ICCID, 1, "b:1", f"{ICCID}:9030:e1", "expired", T0 + timedelta(seconds=1)),
        DbLine("b", ICCID, 2, "b:2", f"{ICCID}:9030:e20", "active", T0 + timedelta(seconds=20)),
    ]
    events = ledger((1, "ordered"), (1, "activated"), (2, "ordered"), (2, "activated"))
    events.append(DbEvent("b:5", "b", 1, "expired"))
    assert checks.agreement(entries, lines, {ICCID}) == []
    assert checks.missing_ledger_events(entries, lines, events) == []
    assert checks.duplicate_orders(entries, lines, {ICCID}) == []
    # A line whose change never took effect at that moment is unknown to the carrier,
    # and the change that did is bought but held by no line.
    moved = [
        lines[0],
        DbLine("b", ICCID, 2, "b:2", f"{ICCID}:9030:e25", "active", T0 + timedelta(seconds=25)),
    ]
    assert checks.agreement(entries, moved, {ICCID}) == [
        f"{ICCID}: package w2 bought but not in the database",
        f"{ICCID}: line 2 ({ICCID}:9030:e25) unknown to the carrier",
    ]
    # A change withdrawn before it took effect (a suspension) was never bought.
    withdrawn = DbLine("b", ICCID, 3, "b:3", f"{ICCID}:9030:r30-20", "cancelled", None, True)
    assert checks.agreement(entries, [*lines, withdrawn], {ICCID}) == []
    bought_ahead = DbLine("b", ICCID, 3, "b:3", "p9", "cancelled", None)
    assert checks.agreement(entries, [*lines, bought_ahead], {ICCID}) == [
        f"{ICCID}: line 3 (p9) unknown to the carrier"
    ]
    without_expiry = events[:-1]
    assert checks.missing_ledger_events(entries, lines, without_expiry) == [
        f"{ICCID}: no activation_failed/cancelled/exhausted/expired/order_failed event "
        "for deactivate of line 1"
    ]


def test_throttled_time_outside_the_windows_a_fault_excuses_is_counted() -> None:
    intervals = [
        {"state": "high_speed", "start": at(0), "end": at(10)},
        {"state": "throttled", "start": at(10), "end": at(14)},
        {"state": "high_speed", "start": at(14), "end": at(20)},
        {"state": "throttled", "start": at(20), "end": None},
    ]
    until = T0 + timedelta(seconds=23)
    assert checks.outside(intervals, "throttled", [], until) == 7.0
    outage = [(T0 + timedelta(seconds=8), T0 + timedelta(seconds=12))]
    assert checks.outside(intervals, "throttled", outage, until) == 5.0
    assert checks.outside(intervals, "throttled", [(T0, until)], until) == 0.0


def test_a_used_up_pass_has_ended_where_passes_stack_and_stays_in_place() -> None:
    """eSIM Go shows a used-up bundle depleted until its window ends, and starts the next
    queued one at once: our line recorded exhausted agrees, and the two do not overlap.
    In place (Webbing) the spent product stays on the device until replaced."""
    entries = [
        entry("order", 0, "a1", None),
        entry("activate", 1, "a1", None),
        entry("order", 10, "a2", None),
        entry("exhaust", 20, "a1", None),
        entry("activate", 20, "a2", None),
        entry("expire", 31, "a1", None),
    ]
    lines = [
        DbLine("b", ICCID, 1, "b:1", f"{ICCID}:bundle:a1", "exhausted", T0),
        DbLine("b", ICCID, 2, "b:2", f"{ICCID}:bundle:a2", "active", T0),
    ]
    before_expiry = entries[:-1]
    assert checks.agreement(before_expiry, lines, {ICCID}) == []
    spans = checks.active_spans(before_expiry, T0 + timedelta(seconds=40))
    assert checks.overlaps(spans, 0) == ([], 0.0)
    spent = [
        DbLine("b", ICCID, 1, "b:1", f"{ICCID}:9030:e1", "active", T0 + timedelta(seconds=1), True)
    ]
    in_place = [entry("order", 1, "w1", None), entry("activate", 1, "w1", None)]
    in_place.append(entry("exhaust", 31, "w1", None))
    assert checks.agreement(in_place, spent, {ICCID}) == []


def test_two_devices_changed_in_the_same_millisecond_buy_nothing_twice() -> None:
    """Webbing names a line by the moment its product took effect, so two devices whose
    changes took effect together hold lines named alike but for the eSIM: each eSIM's
    purchases are its own lines', none made twice (the soak once counted 8 purchases for
    a balance's 7 lines, the other device's line having taken its place)."""

    def device(iccid: str, balance: str) -> tuple[list[dict[str, Any]], list[DbLine]]:
        entries = [
            {**entry("order", seconds, f"{balance}-w{seconds}", None), "iccid": iccid}
            for seconds in (1, 20)
        ]
        lines = [
            DbLine(balance, iccid, seq, f"{balance}:{seq}", f"{iccid}:9030:e{seconds}",
                   "active", T0 + timedelta(seconds=seconds))
            for seq, seconds in ((1, 1), (2, 20))
        ]  # fmt: skip
        return entries, lines

    (mine, my_lines), (theirs, their_lines) = device(ICCID, "b"), device(OTHER, "c")
    lines = [*my_lines, *their_lines]
    assert checks.duplicate_orders([*mine, *theirs], lines, {ICCID, OTHER}) == []
