"""A throwaway PostgreSQL cluster for the test session, and the ``database_url`` fixture.

The cluster is ``initdb`` + ``pg_ctl`` into a temporary directory: it listens on a Unix
socket in that directory only (no TCP port to collide on), trusts local connections and
runs without fsync. PostgreSQL refuses to run as root, so as root (CI and the dev
machines) its programs run as the ``postgres`` OS user that Debian's package creates.
Each test gets a database of its own in it, dropped afterwards.

With ``CI`` set (``.ci/run`` runs with ``CI=true``) a cluster that cannot start fails
every test that needs it; elsewhere those tests are skipped, with the reason.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from models.db import get_engine

DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"
SERVER_OPTIONS = (
    "-c listen_addresses='' -c fsync=off -c synchronous_commit=off "
    "-c full_page_writes=off -c max_connections=300"
)


class ClusterError(RuntimeError):
    """PostgreSQL could not be started here; the message says why."""


def find_binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, else Debian's newest."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    found = sorted(Path("/").glob(DEBIAN_BINARIES.lstrip("/")), key=_major, reverse=True)
    for directory in found:
        if (directory / "initdb").exists():
            return directory
    raise ClusterError("no initdb on PATH nor in /usr/lib/postgresql (apt-get install postgresql)")


def _major(directory: Path) -> int:
    version = directory.parent.name
    return int(version) if version.isdigit() else 0


def _as_server_user() -> list[str]:
    if os.geteuid() != 0:
        return []
    if shutil.which("runuser") is None:
        raise ClusterError("running as root without runuser to start PostgreSQL as postgres")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ClusterError("running as root and no `postgres` OS user to run it as") from None
    return ["runuser", "-u", "postgres", "--"]


@dataclass
class Cluster:
    """A running cluster; ``url(name)`` is the SQLAlchemy URL of one of its databases."""

    base: Path
    binaries: Path
    prefix: list[str]

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self.base}"

    def _admin(self, sql: str) -> None:
        with psycopg.connect(host=str(self.base), user="postgres", dbname="postgres") as conn:
            conn.autocommit = True
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        name = f"test_{uuid.uuid4().hex[:12]}"
        self._admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def pg_ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        argv = [*self.prefix, str(self.binaries / "pg_ctl"), "-D", str(self.data), *args]
        return subprocess.run(
            argv, cwd=self.base, capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self) -> None:
        self.pg_ctl("-m", "immediate", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


def start_cluster() -> Cluster:
    """initdb and start a cluster in a fresh temporary directory, or raise ClusterError."""
    binaries, prefix = find_binaries(), _as_server_user()
    base = Path(tempfile.mkdtemp(prefix="esim-pg-"))
    if prefix:
        shutil.chown(base, user="postgres")
    cluster = Cluster(base, binaries, prefix)
    initdb = [*prefix, str(binaries / "initdb"), "-D", str(cluster.data), "-U", "postgres"]
    initdb += ["--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync"]
    done = subprocess.run(initdb, cwd=base, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise ClusterError(f"initdb failed: {done.stderr.strip()[-800:]}")
    log = base / "server.log"
    options = f"{SERVER_OPTIONS} -k {base}"
    started = cluster.pg_ctl("-l", str(log), "-w", "-t", "60", "-o", options, "start")
    if started.returncode != 0:
        tail = log.read_text()[-800:] if log.exists() else started.stderr
        cluster.stop()
        raise ClusterError(f"pg_ctl start failed: {tail.strip()}")
    return cluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[Cluster]:
    """One PostgreSQL cluster for the whole session; fails in CI, skips elsewhere."""
    try:
        cluster = start_cluster()
    except (ClusterError, OSError, subprocess.TimeoutExpired) as error:
        reason = f"PostgreSQL could not start: {error}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)],
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or a fresh database in the session's cluster."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'balance.db'}"
        yield url
        get_engine(url).dispose()
        return
    cluster: Cluster = request.getfixturevalue("postgres_cluster")
    name = cluster.create_database()
    url = cluster.url(name)
    yield url
    get_engine(url).dispose()
    cluster.drop_database(name)
