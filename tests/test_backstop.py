"""A test stuck where pytest-timeout cannot interrupt it ends its process, with stacks.

CI has a limit for the whole run; one such test used to hold the run until that limit,
with no trace of where it was stuck (tests/conftest.py `pytest_runtest_protocol`).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

STUCK = """
import signal
import time


def test_stuck_where_the_alarm_cannot_reach():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(120)
"""


def test_a_test_stuck_past_its_timeout_ends_its_process_with_every_stack(
    tmp_path: Path,
) -> None:
    (tmp_path / "test_stuck.py").write_text(STUCK)
    began = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(tmp_path), "-p", "tests.conftest"]
        + ["--rootdir", str(tmp_path), "-p", "no:cacheprovider", "-q"]
        + ["-o", "timeout=1", "-o", "timeout_backstop=2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    took = time.monotonic() - began
    assert run.returncode != 0
    assert took < 60, took  # 3 s past the start of the test, not its 120 s sleep
    assert "Timeout (0:00:03)!" in run.stderr, run.stderr
    assert "in test_stuck_where_the_alarm_cannot_reach" in run.stderr, run.stderr
