"""idempotency key per caller

An idempotency key belongs to the caller that sent it as well as to its route: the
primary key becomes (scope, caller, key). Rows kept before this migration get the empty
caller, which is the carrier's (Telna event ids still count as seen); an API client's
key kept before it matches no caller now and is forgotten, as it would be within 24 h.
The downgrade forgets every API client's key.

Revision ID: 4fb86744ef9f
Revises: 6b586c5c8440
Create Date: 2026-12-06 21:51:44.713281
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4fb86744ef9f"
down_revision: str | Sequence[str] | None = "6b586c5c8440"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "idempotency_record"
COPY = "_idempotency_record_copy"
INDEX = "ix_idempotency_record_expires_at"
# PostgreSQL's name for the primary key the first migration created.
PRIMARY_KEY = "idempotency_record_pkey"


def _caller() -> sa.Column[str]:
    return sa.Column("caller", sa.String(length=64), nullable=False, server_default="")


def _copy_on_sqlite(with_caller: bool) -> None:
    """SQLite cannot alter a primary key: the rows move to a copy under the new one."""
    key = ["scope", "caller", "key"] if with_caller else ["scope", "key"]
    op.create_table(
        COPY,
        sa.Column("scope", sa.String(length=32), nullable=False),
        *([_caller()] if with_caller else []),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*key),
    )
    kept = "scope, key, request_hash, status_code, response, created_at, expires_at"
    op.execute(sa.text(f"INSERT INTO {COPY} ({kept}) SELECT {kept} FROM {TABLE}"))
    op.drop_index(INDEX, table_name=TABLE)
    op.drop_table(TABLE)
    op.rename_table(COPY, TABLE)
    op.create_index(INDEX, TABLE, ["expires_at"], unique=False)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _copy_on_sqlite(with_caller=True)
        return
    op.add_column(TABLE, _caller())
    op.drop_constraint(PRIMARY_KEY, TABLE, type_="primary")
    op.create_primary_key(PRIMARY_KEY, TABLE, ["scope", "caller", "key"])


def downgrade() -> None:
    op.execute(sa.text(f"DELETE FROM {TABLE} WHERE caller <> ''"))
    if op.get_bind().dialect.name == "sqlite":
        _copy_on_sqlite(with_caller=False)
        return
    op.drop_constraint(PRIMARY_KEY, TABLE, type_="primary")
    op.drop_column(TABLE, "caller")
    op.create_primary_key(PRIMARY_KEY, TABLE, ["scope", "key"])
