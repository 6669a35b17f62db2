"""The midnight-herd benchmark, small: it must keep running and keep its promises.

Runs ``python -m bench.herd`` as an operator would (its own dev server, the three
simulators as processes) with a few dozen balances, a third at each carrier, and checks
the JSON it writes: every field of DESIGN section 9, every balance switched with no gap
(at the boundary; at eSIM Go as its rolling bundle ended), no purchase made twice, no
request over a carrier's rate limit.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIELDS = {
    "balances",
    "rotations",
    "gap_seconds_max",
    "gap_seconds_p99",
    "throttled_seconds_total",
    "duplicate_orders",
    "rotations_per_second",
    "bare_rotations_per_second",
    "efficiency",
    "carrier_calls_per_rotation",
    "history_events_per_rotation",
    "worker_peak_rss_mb",
    "naive",
}
NAIVE_FIELDS = {"gap_seconds_max", "gap_seconds_p99", "throttled_seconds_total"}


def test_herd_of_24(tmp_path: Path) -> None:
    out = tmp_path / "herd.json"
    argv = [sys.executable, "-m", "bench.herd", "--balances", "24", "--bare-seconds", "4"]
    argv += ["--bring-up-window", "8"]  # enrolled in three waves
    returncode, err = _run_bounded([*argv, "--json", str(out)], timeout=240)
    assert returncode == 0, err[-3000:]
    result = json.loads(out.read_text())
    assert FIELDS <= result.keys(), FIELDS - result.keys()
    assert NAIVE_FIELDS <= result["naive"].keys()
    assert result["balances"] == result["rotations"] == 24
    assert result["gap_seconds_max"] == 0 and result["throttled_seconds_total"] == 0
    assert result["duplicate_orders"] == 0 and result["naive"]["duplicate_orders"] == 0
    # Expire-then-provision leaves every eSIM without a line for a while.
    assert result["naive"]["gap_seconds_max"] > 0
    assert sum(result["carrier_429s"].values()) == 0
    # A third of the herd at eSIM Go, on rolling bundles under its own limit of 10 tokens
    # a second: its 429s, if any, are met and waited out (the client paces by them).
    assert set(result["by_carrier"]) == {"telna", "webbing", "esimgo"}
    for carrier, figures in result["by_carrier"].items():
        assert figures["balances"] == figures["rotations"] == 8, carrier
        assert figures["gap_seconds_max"] == 0 and figures["throttled_seconds_total"] == 0
        assert figures["carrier_429s_answered"] >= 0
    assert result["esimgo_rate_limit_tokens_per_second"] == 10
    esimgo = result["by_carrier"]["esimgo"]
    assert esimgo["line2_orders_peak_per_second"] <= 10 // 2  # an order costs 2 tokens
    # Telna: an order and a start; Webbing: a read and a change, then reads of the
    # device until the change is in effect (it shows only then).
    assert 0 < result["carrier_calls_per_rotation"] <= 5
    assert 0 < result["history_events_per_rotation"] <= 25
    for tally in result["activity_retries"].values():  # read from the herd's histories
        timed_out = sum(n for key, n in tally.items() if key.endswith("_timeout"))
        assert 0 <= timed_out <= tally["retried"]
    # The bare loop ran after the herd (and before it, if the boundary left time); the
    # faster run is the one the ratio uses.
    bare = result["bare_rotations_per_second_runs"]
    assert "after_herd" in bare and set(bare) <= {"before_herd", "after_herd"}, bare
    assert result["bare_rotations_per_second"] == max(bare.values()) > 0
    assert result["efficiency"] == round(
        result["rotations_per_second"] / result["bare_rotations_per_second"], 2
    )
    # Memory per balance: with every balance open, and at the worker's high-water mark
    # (read before the bench itself reads the herd's histories).
    assert result["worker_peak_kb_per_balance"] >= result["worker_kb_per_balance"]
    assert result["worker_peak_rss_mb"] < 1024


def _start(argv: list[str]) -> subprocess.Popen[bytes]:
    """The bench in a process group of its own, with everything it starts."""
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )


def _run_bounded(argv: list[str], timeout: float) -> tuple[int, str]:
    """Runs the bench; past ``timeout`` it is stopped as an operator would (SIGTERM: it
    stops what it started), then its process group is killed, so a dev server and
    simulators never outlive a test that ran out of time."""
    herd = _start(argv)
    try:
        _, err = herd.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        herd.send_signal(signal.SIGTERM)
        try:
            _, err = herd.communicate(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(herd.pid, signal.SIGKILL)
        pytest.fail(f"the herd ran past {timeout:.0f} s: {err.decode()[-3000:]}")
    return herd.returncode, err.decode()


def test_a_negative_bring_up_window_is_refused_in_one_line() -> None:
    argv = [sys.executable, "-m", "bench.herd", "--bring-up-window", "-1"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    last = done.stderr.splitlines()[-1]
    assert last.endswith("--bring-up-window must be 0 (the default) or more"), last


def test_sigterm_stops_the_run_and_everything_it_started_in_one_line() -> None:
    argv = [sys.executable, "-m", "bench.herd", "--balances", "24", "--bare-seconds", "30"]
    herd = _start(argv)
    time.sleep(12)  # servers up, the bare loop running
    herd.send_signal(signal.SIGTERM)
    _, err = herd.communicate(timeout=60)
    assert herd.returncode == 130, err.decode()[-3000:]
    lines = err.decode().splitlines()
    assert "Traceback" not in err.decode(), err.decode()[-3000:]
    assert lines[-1] == "herd: stopped before its figures were taken"
    deadline = time.time() + 10
    while time.time() < deadline:  # the dev server and simulators it started are gone
        try:
            os.killpg(herd.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    pytest.fail("processes the herd started are still running")
