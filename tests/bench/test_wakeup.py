"""The wake-up benchmark, small: N workflows due in one second, taken by one worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_twenty_workflows_wake_and_complete_under_two_sticky_timeouts(tmp_path: Path) -> None:
    out = tmp_path / "wakeup.json"
    argv = [sys.executable, "-m", "bench.wakeup", "--workflows", "20", "--wake-after", "15"]
    done = subprocess.run(
        [
            *argv,
            "--pollers",
            "3",
            "--sticky-timeouts",
            "5",
            "60",
            "--timeout",
            "60",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["workflows"] == 20
    for setting in ("3 sticky 5 s", "3 sticky 60 s"):
        assert 0 < result[setting]["seconds"] <= 60
        assert result[setting]["per_second"] == pytest.approx(20 / result[setting]["seconds"], 0.1)


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--pollers", "many", "--pollers: 'many' is not default, autoscale or a number"),
        ("--sticky-timeouts", "0", "--sticky-timeouts: each must be more than 0 seconds"),
    ],
)
def test_a_bad_setting_is_refused_in_one_line(option: str, value: str, message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.wakeup", option, value],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(message)
