"""product rotation: how its carrier moves to the next pass

Revision ID: d4b2e1f3a5c6
Revises: c3a1f0e2d9b4
Create Date: 2026-12-07 05:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "d4b2e1f3a5c6"
down_revision: str | Sequence[str] | None = "c3a1f0e2d9b4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("product") as batch:
        batch.add_column(
            sa.Column("rotation", sa.String(length=16), nullable=False, server_default="activated")
        )


def downgrade() -> None:
    with op.batch_alter_table("product") as batch:
        batch.drop_column("rotation")
