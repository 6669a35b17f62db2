"""bench.order_cost keeps working: an order, and an order after a lost answer, on a young
and an older eSIM at each carrier (Telna, Webbing, eSIM Go), counted on the wire (no
figure asserted but what each must do: buy in one call; look, then adopt without
buying)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_order_is_counted_at_both_ages_at_each_carrier(tmp_path: Path) -> None:
    out = tmp_path / "order-cost.json"
    argv = [sys.executable, "-m", "bench.order_cost", "--days", "3", "--json", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result) == {"telna", "webbing", "esimgo"}
    for figures in result.values():
        young, old = figures["one_day"], figures["one_year"]
        assert (young["earlier_packages"], old["earlier_packages"]) == (1, 3)
        for kind in ("order", "look"):  # the same at both ages
            assert young[kind]["calls"] == old[kind]["calls"] >= 1
            assert old[kind]["bytes"] <= 1.1 * young[kind]["bytes"]
    # No order ever left: Telna buys in one call, without a look (Webbing first reads
    # the device, resumed here: each aged line ended with a suspension).
    assert result["telna"]["one_day"]["order"]["calls"] == 1
    # eSIM Go: the order, then one read of the bundle's latest assignment; the look is
    # one read of the eSIM's open bundles.
    esimgo = result["esimgo"]["one_year"]
    assert (esimgo["order"]["calls"], esimgo["look"]["calls"]) == (2, 1)


def test_no_age_is_refused_in_one_line() -> None:
    argv = [sys.executable, "-m", "bench.order_cost", "--days", "0"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "--days must be at least 1" in done.stderr.strip().splitlines()[-1]
