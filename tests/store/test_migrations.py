"""Alembic owns the schema: migrations round-trip, agree with the models, and are enforced."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from argparse import Namespace
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlmodel import SQLModel

from models.db import (
    SchemaOutOfDate,
    check_schema,
    current_revision,
    get_engine,
    head_revision,
    init_db,
    migrate,
)

ROOT = Path(__file__).resolve().parents[2]
TABLES = set(SQLModel.metadata.tables)


def _cli_config(url: str) -> Config:
    """alembic.ini as the command line reads it, with ``-x url=...``."""
    config = Config(str(ROOT / "alembic.ini"))
    config.cmd_opts = Namespace(x=[f"url={url}"])
    return config


def _tables(url: str) -> set[str]:
    with get_engine(url).connect() as connection:
        return set(inspect(connection).get_table_names()) - {"alembic_version"}


def test_upgrade_downgrade_upgrade_round_trips(database_url: str) -> None:
    config = _cli_config(database_url)
    command.upgrade(config, "head")
    assert _tables(database_url) == TABLES
    assert current_revision(database_url) == head_revision()
    command.downgrade(config, "base")
    assert _tables(database_url) == set()
    assert current_revision(database_url) is None
    command.upgrade(config, "head")
    assert _tables(database_url) == TABLES
    check_schema(database_url)


def test_models_and_migrations_agree(database_url: str) -> None:
    """If this fails, models/tables.py changed without a migration: `make migration`."""
    migrate(database_url)
    with get_engine(database_url).connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == [], f"models and migrations differ (run `make migration`): {diff}"


def test_concurrent_starts_migrate_once(database_url: str) -> None:
    with ThreadPoolExecutor(4) as pool:
        for future in [pool.submit(migrate, database_url) for _ in range(4)]:
            future.result(timeout=60)
    assert _tables(database_url) == TABLES
    check_schema(database_url)


def test_without_auto_migrate_a_database_behind_is_refused(database_url: str) -> None:
    with pytest.raises(SchemaOutOfDate, match="has no schema yet.*alembic upgrade head"):
        init_db(database_url, auto_migrate=False)
    assert _tables(database_url) == set()
    migrate(database_url)
    init_db(database_url, auto_migrate=False)


def test_a_database_migrated_by_newer_code_is_refused(database_url: str) -> None:
    migrate(database_url)
    with get_engine(database_url).begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed0000'"))
    with pytest.raises(SchemaOutOfDate, match="f00dfeed0000, which this code does not know"):
        check_schema(database_url)


def test_the_worker_refuses_to_start_with_one_clear_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    env = {**os.environ, "DATABASE_URL": url, "AUTO_MIGRATE": "false"}
    done = subprocess.run(
        [sys.executable, "worker.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "has no schema yet" in lines[0], lines
    assert "alembic upgrade head" in lines[0] and "AUTO_MIGRATE=true" in lines[0]
    assert _tables(url) == set()


def test_a_database_made_before_migrations_is_adopted_when_it_matches(database_url: str) -> None:
    SQLModel.metadata.create_all(get_engine(database_url))  # as the code once did
    migrate(database_url)
    assert current_revision(database_url) == head_revision()
    check_schema(database_url)


def test_a_database_made_before_migrations_that_differs_is_refused(database_url: str) -> None:
    with get_engine(database_url).begin() as connection:
        connection.execute(text("CREATE TABLE esim (iccid VARCHAR(20) PRIMARY KEY)"))
    with pytest.raises(SchemaOutOfDate, match="no migration history"):
        migrate(database_url)
    assert current_revision(database_url) is None


def test_a_new_database_locked_by_another_writer_is_waited_for(tmp_path: Path) -> None:
    """SQLite refuses the switch to WAL at once while another connection writes; a
    starter must wait for it as it waits for any lock, not fail (it did, now and then,
    when several processes started on a new database together)."""
    path = tmp_path / "balance.db"
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("BEGIN IMMEDIATE")  # holds the write lock until rolled back
    release = threading.Timer(0.5, writer.rollback)
    release.start()
    try:
        migrate(f"sqlite:///{path}")
    finally:
        release.join()
        writer.close()
    assert _tables(f"sqlite:///{path}") == TABLES
    with sqlite3.connect(path) as reader:
        assert reader.execute("PRAGMA journal_mode").fetchone() == ("wal",)
