"""The product's stack (``stack.py``, as ``make run`` starts it) driven by the chaos soak.

It runs on free ports in a data directory of its own, with secrets the soak chose, and
lets the soak find, kill and watch the restart of each of its services: the supervisor
itself restarts whatever dies, as it does in production.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import stack
from ports import free_port
from tests.test_stack import proc_stat

# Environment variables of ours that must not leak into the stack (it gets its own).
OWN_SETTINGS = (
    "DATABASE_URL",
    "TEMPORAL_",
    "TELNA",
    "WEBBING",
    "ESIMGO",
    "API_",
    "NOTIFY_",
    "TASK_QUEUE",
)
# What identifies each service's process in its command line.
COMMANDS = {
    "temporal": "start-dev",
    "telna-sim": "simulators.telna",
    "webbing-sim": "simulators.webbing",
    "esimgo-sim": "simulators.esimgo",
    "worker": "worker.py",
    "api": "api.app:create_app",
}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _parent(pid: int) -> int | None:
    """The live process's parent pid; None once it is gone (or a zombie)."""
    stat = proc_stat(pid)
    return None if stat is None or stat[0] == "Z" else stat[1]


def make_secrets() -> dict[str, str]:
    """Fresh values for every secret the stack needs (long enough to be scanned for)."""
    values = {name: secrets.token_urlsafe(24) for name in stack.SECRET_NAMES}
    values["API_KEYS"] = f"operator:{values['API_KEYS']},service:{secrets.token_urlsafe(24)}"
    values["WEBBING__USERNAME"] = f"soak-{secrets.token_hex(6)}"
    return values


class StackRun:
    """``python stack.py --no-demo`` in a process group of its own; output kept in a file."""

    def __init__(self, data: Path, settings: Mapping[str, str], secret_values: Mapping[str, str]):
        self.data = data
        self.ports = {
            name: free_port()
            for name in (
                "TEMPORAL_PORT",
                "TEMPORAL_UI_PORT",
                "API_PORT",
                "TELNA_PORT",
                "WEBBING_PORT",
                "ESIMGO_PORT",
                "WORKER_METRICS_PORT",
            )
        }
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}
        self.env = env | dict(settings) | dict(secret_values)
        self.env |= {name: str(port) for name, port in self.ports.items()}
        self.env["TEMPORAL_UI_URL"] = f"http://127.0.0.1:{self.ports['TEMPORAL_UI_PORT']}"
        self.output = data / "stack.out"
        data.mkdir(parents=True, exist_ok=True)
        self._out = self.output.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "stack.py", "--no-demo", "--data-dir", str(data)],
            cwd=stack.ROOT,
            env=self.env,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._seen: set[int] = set()
        self._lock = threading.Lock()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['API_PORT']}"

    @property
    def temporal_address(self) -> str:
        return f"127.0.0.1:{self.ports['TEMPORAL_PORT']}"

    def sim_url(self, carrier: str) -> str:
        return f"http://127.0.0.1:{self.ports[carrier.upper() + '_PORT']}"

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, text: str, timeout: float) -> None:
        """Wait until stack.py printed a line containing ``text``."""
        deadline = time.monotonic() + timeout
        while text not in self.text():
            if self.proc.poll() is not None:
                raise RuntimeError(f"stack.py exited: {self.text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {text!r} from stack.py in {timeout:.0f}s")
            time.sleep(0.2)

    def pid(self, service: str) -> int | None:
        """The live process of a service (a child of stack.py), if it runs now."""
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and _parent(int(entry.name)) == self.proc.pid:
                pid = int(entry.name)
                self._seen.add(pid)
                if COMMANDS[service] in _cmdline(pid):
                    return pid
        return None

    def kill(self, service: str, sig: signal.Signals = signal.SIGKILL) -> int:
        """Signal the service's process group; returns the pid that was signalled."""
        pid = self.pid(service)
        if pid is None:
            raise RuntimeError(f"{service} is not running")
        os.killpg(pid, sig)
        return pid

    def wait_restarted(self, service: str, old: int, timeout: float) -> int:
        """Wait until the supervisor has started the service again; its new pid."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.pid(service)
            if pid is not None and pid != old:
                return pid
            if time.monotonic() > deadline:
                raise TimeoutError(f"{service} was not restarted within {timeout:.0f}s")
            time.sleep(0.2)

    def logs(self) -> dict[str, str]:
        """Every log the stack wrote (per service, and the supervisor's own output)."""
        texts = {p.name: p.read_text(errors="replace") for p in (self.data / "logs").glob("*")}
        return texts | {"stack.out": self.text()}

    def stop(self) -> int:
        """Ctrl-C, as a terminal sends it; kill whatever is left after 40 s."""
        code = self.proc.poll()
        if code is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                code = self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                code = self.proc.wait()
        for pid in self._seen:
            if _parent(pid) is not None:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._out.close()
        return code
