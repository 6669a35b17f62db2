"""The herd's figures from the carriers' packages, without a reference on any of them."""

from __future__ import annotations

from typing import Any

from bench.herd_figures import Naive, duplicates, gaps, naive_lines

ICCID = "8944000000000000001"


def package(id: str, ordered: int, activated: int | None, expires: int | None) -> dict[str, Any]:
    def at(second: int | None) -> str | None:
        return None if second is None else f"2030-01-01T00:00:{second:02d}+00:00"

    return {
        "id": id,
        "iccid": ICCID,
        "product_id": "compressed-30s",
        "reference": None,
        "ordered_at": at(ordered),
        "activated_at": at(activated),
        "expires_at": at(expires),
        "terminated_at": None,
    }


def test_the_naive_baseline_lines_are_known_by_when_they_were_bought() -> None:
    found = [package("p1", 0, 1, 30), package("p2", 31, 35, None)]
    lines = naive_lines(found, {ICCID})
    assert lines == [
        Naive(f"naive-{ICCID}", ICCID, 1, "p1"),
        Naive(f"naive-{ICCID}", ICCID, 2, "p2"),
    ]
    assert duplicates(found, lines, {ICCID}) == 0
    assert gaps(found, {"p1": 1, "p2": 2}, {ICCID}, until=1e12) == [5.0]
    # Line 1 bought again before it ended, and line 2 twice after.
    twice = [*found, package("p3", 2, None, None), package("p4", 32, None, None)]
    assert duplicates(twice, naive_lines(twice, {ICCID}), {ICCID}) == 2
