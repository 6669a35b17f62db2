"""The ``make run`` supervisor: secrets, restart backoff, and a real Temporal dev server."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.client import Client

import stack
from ports import PRIVATE_PORTS_FROM, free_port, port_open

pytestmark = pytest.mark.timeout(60)

SECRET_NAMES = {
    "API_KEYS",
    "TELNA__API_KEY",
    "TELNA__WEBHOOK_SECRET",
    "WEBBING__USERNAME",
    "WEBBING__PASSWORD",
    "WEBBING__WSKEY",
    "ESIMGO__API_KEY",
}
SEARCH_ATTRIBUTES = {
    "BalanceState": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Iccid": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Carrier": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "ProductId": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "LineSeq": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "LineEndsAt": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
}
PORT_SETTINGS = (
    "TEMPORAL_PORT",
    "TEMPORAL_UI_PORT",
    "API_PORT",
    "TELNA_PORT",
    "WEBBING_PORT",
    "ESIMGO_PORT",
)


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, process group) of a process, from /proc; None once it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid, pgrp = text[text.rindex(")") + 2 :].split()[:3]
    return state, int(ppid), int(pgrp)


def alive(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    stat = proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def live_processes() -> dict[int, tuple[str, int, int]]:
    """Every live process on the machine, by pid."""
    stats = {
        int(p.name): proc_stat(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()
    }
    return {pid: stat for pid, stat in stats.items() if stat is not None and stat[0] != "Z"}


def child_environ(pid: int) -> dict[str, str]:
    """The environment a process was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines of secrets.env."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


class StackRun:
    """stack.py as a subprocess, its output collected line by line."""

    def __init__(self, data_dir: Path, env: dict[str, str], only: str | None = "temporal") -> None:
        argv = [sys.executable, "stack.py", "--data-dir", str(data_dir)]
        argv += ["--only", only] if only else []
        self.proc = subprocess.Popen(
            argv,
            cwd=stack.ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self.eof = False
        self.changed = threading.Condition()
        self.seen_children: set[int] = set()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self.changed:
                self.lines.append(line.rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.eof = True
            self.changed.notify_all()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str | re.Pattern[str], timeout: float = 30.0) -> str:
        """Wait until a line of output contains ``text`` (a regular expression if it is a
        compiled pattern); returns that line."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while True:
                for line in self.lines:
                    if text in line if isinstance(text, str) else text.search(line):
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.eof:
                    pytest.fail(f"no {text!r} in the output of stack.py:\n{self.output}")
                self.changed.wait(remaining)

    def children(self) -> list[int]:
        """Pids of the live processes stack.py started."""
        pids = [pid for pid, (_, ppid, _) in live_processes().items() if ppid == self.proc.pid]
        self.seen_children.update(pids)
        return pids

    def stop(self, sig: signal.Signals = signal.SIGINT) -> int:
        """Ctrl-C as a terminal sends it (or another signal); stack.py's exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def clean_up(self) -> None:
        """Kill whatever a failed test left running."""
        self.proc.kill()
        for pid in self.seen_children:
            if alive(pid):
                os.killpg(pid, signal.SIGKILL)


def wait_until_listening(port: int, timeout: float = 20.0) -> None:
    """Wait until something accepts connections on the port."""
    deadline = time.monotonic() + timeout
    while not port_open(port):
        assert time.monotonic() < deadline, f"nothing listens on {port} after {timeout}s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def env() -> dict[str, str]:
    """Our environment without secrets, with free ports for every service."""
    env = {k: v for k, v in os.environ.items() if k not in SECRET_NAMES}
    return env | {name: str(free_port()) for name in PORT_SETTINGS}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The stack's data directory, shared by the runs of this module."""
    return tmp_path_factory.mktemp("stack-data")


@pytest.fixture(scope="module")
def running(data_dir: Path, env: dict[str, str]) -> Iterator[StackRun]:
    """One stack with only the Temporal dev server, up for the tests of this module."""
    run = StackRun(data_dir, env)
    try:
        run.wait_for("Ctrl-C to stop")
        run.children()
        yield run
    finally:
        run.stop()
        run.clean_up()


# --- pure functions ---


def test_free_ports_come_from_this_processs_slice_below_the_ephemeral_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw1")
    monkeypatch.setattr("ports._handed_out", set())
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    size = (ephemeral - PRIVATE_PORTS_FROM) // 2
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(PRIVATE_PORTS_FROM + size <= port < ephemeral for port in ports)

    monkeypatch.setattr("ports._handed_out", set())
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        assert free_port() != ports[0]


def test_api_keys_secret_holds_an_operator_and_a_service_key() -> None:
    value = stack.generate_secret("API_KEYS")
    assert re.fullmatch(r"operator:[\w-]{20,},service:[\w-]{20,}", value)
    assert value != stack.generate_secret("API_KEYS")


def test_secrets_come_from_the_environment_then_the_file_then_fresh() -> None:
    environ = {"API_KEYS": "operator:mine"}
    stored = {"TELNA__API_KEY": "kept"}

    values = stack.resolve_secrets(environ, stored)

    assert "API_KEYS" not in values
    assert values["TELNA__API_KEY"] == "kept"
    assert set(values) == SECRET_NAMES - {"API_KEYS"}
    assert all(len(v) >= 20 for name, v in values.items() if name != "TELNA__API_KEY")


def test_secrets_file_is_written_once_and_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets.env"

    first = stack.load_secrets(path, {})
    written = path.read_text()
    second = stack.load_secrets(path, {"WEBBING__WSKEY": "from-env"})

    assert path.stat().st_mode & 0o777 == 0o600
    assert read_env_file(path) == first
    assert second == {k: v for k, v in first.items() if k != "WEBBING__WSKEY"}
    assert path.read_text() == written


def test_children_reach_our_plaintext_dev_server_without_secured_temporal_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secured = {"TEMPORAL_TLS__CA_CERT": "/etc/ca.pem", "TEMPORAL_API_KEY": "tmprl-key"}
    for name, value in secured.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    settings = stack.Settings(temporal_port=17233)

    ours = stack.child_env(settings, tmp_path, {})
    monkeypatch.setenv("TEMPORAL_ADDRESS", "balances.acct.tmprl.cloud:7233")
    theirs = stack.child_env(settings, tmp_path, {})

    assert ours["TEMPORAL_ADDRESS"] == "127.0.0.1:17233"
    assert not secured.keys() & ours.keys()
    assert theirs["TEMPORAL_ADDRESS"] == "balances.acct.tmprl.cloud:7233"
    assert secured.items() <= theirs.items()


def test_the_esimgo_simulator_runs_beside_the_others_and_calls_back_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("ESIMGO__BASE_URL", "ESIMGO_SIM_CALLBACK_URL"):
        monkeypatch.delenv(name, raising=False)
    settings = stack.Settings(esimgo_port=18103, api_port=18000)

    services = {s.name: s for s in stack.build_services(settings, tmp_path, "temporal", False)}
    env = stack.child_env(settings, tmp_path, {"ESIMGO__API_KEY": "shared-key"})

    sim = services["esimgo-sim"]
    assert sim.argv[1:] == [
        "-m",
        "simulators.esimgo",
        "--port",
        "18103",
        "--state-file",
        str(tmp_path / "esimgo-sim.json"),
        "--log-level",
        "warning",
    ]
    assert sim.port == 18103 and sim.url == "http://127.0.0.1:18103"
    assert "esimgo-sim" in services["worker"].depends_on
    assert list(services).index("esimgo-sim") < list(services).index("worker")
    # One key for both ends: the client's X-API-Key and the callbacks' signature.
    assert env["ESIMGO__API_KEY"] == "shared-key"
    assert env["ESIMGO__BASE_URL"] == "http://127.0.0.1:18103/v2.4"
    assert env["ESIMGO_SIM_CALLBACK_URL"] == "http://127.0.0.1:18000/v1/carriers/esimgo/events"
    # eSIM Go calls back with usage: never polled.
    assert "esimgo" not in stack.Settings().usage_poll_carriers


def test_restart_delay_doubles_to_30s_and_resets_after_a_minute_up() -> None:
    delays: list[float] = []
    previous = None
    for _ in range(7):
        previous = stack.next_backoff(previous, uptime=2.0)
        delays.append(previous)

    assert delays == [1, 2, 4, 8, 16, 30, 30]
    assert stack.next_backoff(30, uptime=59.0) == 30
    assert stack.next_backoff(30, uptime=60.0) == 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--bogus"], "error: unrecognized arguments: --bogus"),
        (["--only", "temporal,nope"], "error: --only: unknown nope"),
    ],
)
def test_bad_flags_exit_2_with_one_readable_line(argv: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "stack.py", *argv], cwd=stack.ROOT, capture_output=True, text=True
    )

    assert result.returncode == 2
    assert message in result.stderr.splitlines()[-1]


# --- the real dev server under stack.py ---


def test_prints_where_everything_is_once_up(
    running: StackRun, env: dict[str, str], data_dir: Path
) -> None:
    ui = f"http://127.0.0.1:{env['TEMPORAL_UI_PORT']}/namespaces/default/workflows"
    running.wait_for("[stack] ready")
    block = running.output.split("[stack] all up:")[1]

    assert f"Temporal UI  {ui}" in block
    assert str(data_dir.resolve() / "logs") in block
    assert str(data_dir.resolve() / "secrets.env") in block
    assert "dashboard" not in block  # no API with --only temporal
    assert "[demo]" not in running.output and "[progress]" not in running.output


async def test_dev_server_has_the_search_attributes(running: StackRun, env: dict[str, str]) -> None:
    running.wait_for("[stack] ready")
    # With --only temporal the stack is ready once the server's port accepts connections,
    # which can be a moment before its frontend is healthy.
    deadline = time.monotonic() + 30
    while True:
        try:
            client = await Client.connect(f"127.0.0.1:{env['TEMPORAL_PORT']}", namespace="default")
            break
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)

    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace="default")
    )

    assert SEARCH_ATTRIBUTES.items() <= dict(response.custom_attributes).items()


def test_children_get_generated_secrets_kept_privately(running: StackRun, data_dir: Path) -> None:
    secrets_file = data_dir / "secrets.env"
    stored = read_env_file(secrets_file)
    [temporal] = running.children()

    assert secrets_file.stat().st_mode & 0o777 == 0o600
    assert set(stored) == SECRET_NAMES
    assert stored.items() <= child_environ(temporal).items()
    assert str(secrets_file) in running.output
    assert not any(value in running.output for value in stored.values())


def test_restarts_a_child_that_dies(running: StackRun, env: dict[str, str]) -> None:
    [old] = running.children()

    os.kill(old, signal.SIGKILL)

    running.wait_for("[stack] temporal was killed by signal 9; restarting in 1s")
    deadline = time.monotonic() + 20
    while not [pid for pid in running.children() if pid != old]:
        assert time.monotonic() < deadline, "temporal was not restarted"
        time.sleep(0.1)
    wait_until_listening(int(env["TEMPORAL_PORT"]))


def test_ctrl_c_leaves_no_process_behind(running: StackRun) -> None:
    groups = set(running.children())
    assert groups

    assert running.stop() == 0

    assert "[stack] stopped" in running.output
    left = [pid for pid, (_, _, pgrp) in live_processes().items() if pgrp in groups]
    assert left == []
    assert not any(alive(pid) for pid in running.seen_children)


def test_next_start_reuses_the_secrets_honours_the_environment_and_stops_on_sigterm(
    running: StackRun, data_dir: Path, env: dict[str, str]
) -> None:
    running.stop()
    secrets_file = data_dir / "secrets.env"
    before = secrets_file.read_text()

    again = StackRun(data_dir, env | {"API_KEYS": "operator:from-env"})
    try:
        again.wait_for("Ctrl-C to stop")
        [temporal] = again.children()
        environ = child_environ(temporal)
        assert again.stop(signal.SIGTERM) == 0
        assert not alive(temporal)
    finally:
        again.clean_up()

    assert secrets_file.read_text() == before
    assert environ["API_KEYS"] == "operator:from-env"
    assert environ["TELNA__API_KEY"] == read_env_file(secrets_file)["TELNA__API_KEY"]


def test_make_run_leaves_the_simulators_control_api_open(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SIM_CONTROL_TOKEN", "exported-for-compose")
    env = stack.child_env(stack.Settings(), tmp_path, {})
    assert "SIM_CONTROL_TOKEN" not in env
