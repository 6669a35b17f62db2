"""The spend ledger's rules, without a database: sums per key and currency, in order,
unpriced lines never counted as 0, amounts as decimal strings."""

from __future__ import annotations

import pytest

from models.money import amount
from models.spend import Tally, after, per_currency, tally


@pytest.mark.parametrize(
    ("cents", "shown"),
    [(0, "0.00"), (5, "0.05"), (150, "1.50"), (1250, "12.50"), (123_456_789, "1234567.89")],
)
def test_amounts_are_major_units_with_two_decimals(cents: int, shown: str) -> None:
    assert amount(cents) == shown


def test_sums_of_one_key_and_currency_add_up_and_groups_come_in_order() -> None:
    groups = tally(
        [
            Tally("webbing", "USD", 300, 2, 0),
            Tally("telna", "USD", 150, 1, 0),
            Tally("telna", "EUR", 99, 1, 0),
            Tally("telna", "USD", 50, 2, 1),
            Tally(None, "USD", 10, 1, 0),
            Tally("esimgo", None, None, 3, 3),
        ]
    )
    assert [(g.key, g.currency, g.cents, g.lines, g.unpriced) for g in groups] == [
        ("esimgo", None, None, 3, 3),
        ("telna", "EUR", 99, 1, 0),
        ("telna", "USD", 200, 3, 1),
        ("webbing", "USD", 300, 2, 0),
        (None, "USD", 10, 1, 0),
    ]


def test_unpriced_lines_are_unknown_never_zero() -> None:
    (only_unpriced,) = tally([Tally("telna", "USD", None, 2, 2)])
    assert (only_unpriced.cents, only_unpriced.amount) == (None, None)
    (mixed,) = tally([Tally("telna", "USD", None, 2, 2), Tally("telna", "USD", 150, 1, 0)])
    assert (mixed.cents, mixed.amount, mixed.lines, mixed.unpriced) == (150, "1.50", 3, 2)
    (free,) = tally([Tally("telna", "USD", 0, 1, 0)])
    assert (free.cents, free.amount) == (0, "0.00")  # a free pass is known to cost 0


def test_a_page_starts_after_the_group_its_cursor_names() -> None:
    groups = [
        Tally("a", "EUR", 1, 1, 0),
        Tally("a", "USD", 1, 1, 0),
        Tally("b", "USD", 1, 1, 0),
        Tally(None, "USD", 1, 1, 0),
    ]
    assert after(groups, "a", "EUR") == groups[1:]
    assert after(groups, "a", "USD") == groups[2:]
    assert after(groups, "b", "USD") == groups[3:]
    assert after(groups, None, "USD") == []
    assert after(groups, "0", None) == groups  # before the first


def test_per_currency_adds_up_every_key_and_keeps_unpriced_apart() -> None:
    totals = per_currency(
        [
            Tally("telna", "USD", 150, 2, 1),
            Tally("webbing", "USD", None, 1, 1),
            Tally("esimgo", "EUR", 300, 1, 0),
            Tally("webbing", "EUR", None, 2, 2),
        ]
    )
    assert [(t.key, t.currency, t.cents, t.lines, t.unpriced) for t in totals] == [
        (None, "EUR", 300, 3, 2),
        (None, "USD", 150, 3, 2),
    ]
    (unknown,) = per_currency([Tally("webbing", "USD", None, 1, 1)])
    assert unknown.cents is None
