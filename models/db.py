"""Database engine, sessions, and the schema: Alembic migrations own it, nothing else.

SQLite (the embedded default) runs in WAL mode with a busy timeout, so the worker's
activity threads and the API can write concurrently; PostgreSQL needs nothing special.

Every process that touches the database calls :func:`init_db` at start: with
``AUTO_MIGRATE`` on (the default) it upgrades the schema to the newest migration
(:func:`migrate`), otherwise it refuses to start on a database behind the code
(:func:`check_schema`). Tables are never created any other way.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Table, event, inspect, make_url, pool, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from config import get_settings
from models import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

MIGRATIONS = Path(__file__).resolve().parents[1] / "migrations"
# Any constant: the key of the PostgreSQL advisory lock that serialises migrations.
MIGRATION_LOCK_KEY = 0x65_53_49_4D  # "eSIM"
# How long a connection waits for SQLite's locks: the busy timeout, and the bound on
# retrying the switch to WAL (which SQLite refuses at once, not after the timeout).
SQLITE_LOCK_WAIT_S = 30.0


class SchemaOutOfDate(RuntimeError):
    """The database is not at the revision the code needs; the message says what to do."""


@lru_cache
def get_engine(url: str) -> Engine:
    """The engine for ``url``, created once; SQLite parent folders are created."""
    if url.startswith("sqlite"):
        _make_sqlite_folder(url)
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": SQLITE_LOCK_WAIT_S}
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _make_sqlite_folder(url: str) -> None:
    path = make_url(url).database
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def _use_wal(dbapi_connection: sqlite3.Connection) -> None:
    """Put the database in WAL mode (it stays so: this is a no-op after the first time).

    Switching needs the database to itself, and when another connection holds a write
    lock SQLite answers "database is locked" at once instead of waiting out the busy
    timeout (waiting could deadlock). Only a new database's first connections race for
    it, so the switch is retried, for as long as the busy timeout would have waited.
    """
    deadline = time.monotonic() + SQLITE_LOCK_WAIT_S
    while True:
        try:
            dbapi_connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    _use_wal(dbapi_connection)
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_LOCK_WAIT_S * 1000)}")
    cursor.close()


def alembic_config(url: str) -> Config:
    """Alembic's configuration for ``url``, without alembic.ini (and its logging set-up)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config("sqlite://"))


def head_revision() -> str | None:
    """The newest migration of this code."""
    return _scripts().get_current_head()


def _known_revisions() -> set[str]:
    return {script.revision for script in _scripts().walk_revisions()}


def current_revision(url: str) -> str | None:
    """The migration the database at ``url`` is at (None: never migrated)."""
    # Alembic logs its dialect at INFO whenever it looks; a check need not say so.
    logger = logging.getLogger("alembic.runtime.migration")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with get_engine(url).connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        logger.setLevel(level)


def migrate(url: str, revision: str = "head") -> Engine:
    """Upgrade the schema at ``url`` to ``revision``; safe to run from many processes at once.

    The whole upgrade is one transaction (PostgreSQL and SQLite have transactional DDL),
    held under a lock, so concurrent starters wait and then find nothing left to do.
    """
    _run_locked(url, lambda config: _upgrade(config, revision))
    return get_engine(url)


def _upgrade(config: Config, revision: str) -> None:
    connection = config.attributes["connection"]
    existing = set(inspect(connection).get_table_names())
    if existing and "alembic_version" not in existing:
        # Made by create_all before there were migrations: adopt it if it is exactly
        # what the models describe, refuse otherwise (never alter it by guesswork).
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        if compare_metadata(context, SQLModel.metadata):
            where = make_url(str(connection.engine.url)).render_as_string(hide_password=True)
            raise SchemaOutOfDate(
                f"database {where} has tables but no migration history, and they differ "
                "from the models: move it aside, or `alembic stamp` the revision it matches"
            )
        command.stamp(config, "head")
        return
    command.upgrade(config, revision)


def downgrade(url: str, revision: str) -> None:
    """Downgrade the schema at ``url`` to ``revision`` (``base``: no tables at all)."""
    _run_locked(url, lambda config: command.downgrade(config, revision))


def check_schema(url: str) -> None:
    """Raise :class:`SchemaOutOfDate` unless the database is at the newest migration."""
    current, head = current_revision(url), head_revision()
    if current == head:
        return
    where = make_url(url).render_as_string(hide_password=True)
    if current is None:
        state = "has no schema yet"
    elif current not in _known_revisions():
        raise SchemaOutOfDate(
            f"database {where} is at migration {current}, which this code does not know "
            f"(newer code migrated it?); deploy that code or downgrade the database"
        )
    else:
        state = f"is at migration {current}"
    raise SchemaOutOfDate(
        f"database {where} {state}, this code needs {head}: run `alembic upgrade head` "
        f"(with DATABASE_URL set) or start with AUTO_MIGRATE=true"
    )


def init_db(url: str, auto_migrate: bool | None = None) -> Engine:
    """Bring the schema up to date (or check it is) and return the engine.

    ``auto_migrate`` defaults to the ``AUTO_MIGRATE`` setting.
    """
    if auto_migrate is None:
        auto_migrate = get_settings().auto_migrate
    if auto_migrate:
        return migrate(url)
    check_schema(url)
    return get_engine(url)


def _run_locked(url: str, step: Any) -> None:
    """Run an Alembic command on one connection, in one transaction, under a lock."""
    engine = _migration_engine(url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config = alembic_config(url)
            config.attributes["connection"] = connection
            step(config)
    finally:
        engine.dispose()


def _migration_engine(url: str) -> Engine:
    """A short-lived engine for migrations; on SQLite its transactions are real ones.

    pysqlite commits before DDL on its own; with its transaction handling off and
    ``BEGIN IMMEDIATE`` sent by us, an upgrade is atomic and takes SQLite's write lock
    first, which is what serialises concurrent upgrades there.
    """
    if not url.startswith("sqlite"):
        return create_engine(url, poolclass=pool.NullPool)
    _make_sqlite_folder(url)
    engine = create_engine(
        url, poolclass=pool.NullPool, connect_args={"timeout": SQLITE_LOCK_WAIT_S}
    )

    @event.listens_for(engine, "connect")
    def _manual_transactions(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        _use_wal(dbapi_connection)

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def dialect_insert(session: Session, model: type[Any] | Table) -> Any:
    """``INSERT`` into ``model``'s table (or a Core table) in the session's dialect (SQLite
    or PostgreSQL), which offers ``on_conflict_do_nothing`` / ``on_conflict_do_update``:
    upserts that stay correct when two writers race, where select-then-insert does not."""
    return dialect_insert_for(session.get_bind().dialect.name, model)


def dialect_insert_for(dialect: str, model: type[Any] | Table) -> Any:
    """``dialect_insert`` by the dialect's name: for statements built once per dialect."""
    return postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
