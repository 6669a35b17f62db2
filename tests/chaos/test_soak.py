"""The chaos soak in the test suite (slow; CI runs it too): see :mod:`tests.chaos.soak`.

``SOAK_SEED`` picks the fault moments (default 1); the summary is printed either way.
"""

from __future__ import annotations

import os

import pytest

from tests.chaos.soak import soak

# Solo: its 30 s passes leave seconds of slack, which a second test process takes.
pytestmark = [pytest.mark.slow, pytest.mark.solo, pytest.mark.timeout(900)]


async def test_nothing_is_lost_under_chaos() -> None:
    summary = await soak(seed=int(os.environ.get("SOAK_SEED", "1")))

    assert summary.problems == []
    assert summary.faults["kill-worker"] >= 5
    assert summary.killed_between_order_and_activation
    assert summary.faults["restart-temporal"] == summary.faults["restart-api"] == 1
    assert summary.faults["outage"] == 3  # one per carrier
    assert summary.faults["slow-commit"] == 1
    assert all(figures["commit_delay"] > 0 for figures in summary.injected.values())
    assert summary.unanswered_orders > 0  # the slow commit bit: orders were held in doubt
    assert len(summary.reenrolled) == 3  # each continued (else a problem)
    assert all(w["duplicated"] > 0 and w["delayed"] > 0 for w in summary.webhooks.values())
    assert all(figures["error"] > 0 for figures in summary.injected.values())
    assert summary.rotations >= 9 * summary.esims  # ten compressed days each
    assert summary.early_rotations > 0
    assert summary.refused > 0  # every probe that must be refused was (else a problem)
