"""bench.reads keeps working: two small ledgers, each read timed once (no timing asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READS = {"continuity", "balance", "fleet_page", "esim_page"}


def test_two_ledgers_are_built_and_every_read_timed(tmp_path: Path) -> None:
    out = tmp_path / "reads.json"
    argv = [sys.executable, "-m", "bench.reads", "--balances", "6", "--calls", "1"]
    argv += ["--rows", "100", "--rows", "600", "--json", str(out)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    small, large = result["ledgers"]
    assert result["balances"] == 6 and small["rows"] < large["rows"]
    assert small["rows"] == small["lines"] + small["events"]
    for ledger in (small, large):
        assert set(ledger["median_ms"]) == READS and min(ledger["median_ms"].values()) > 0
    assert set(result["ratio"]) == READS and result["target_ratio"] == 1.5


def test_one_ledger_is_refused_in_one_line() -> None:
    argv = [sys.executable, "-m", "bench.reads", "--rows", "1000"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "give --rows twice or none" in done.stderr.strip().splitlines()[-1]
