"""action quota

Revision ID: 7d3e9a41c2f0
Revises: b5b6564b90b0
Create Date: 2026-12-06 23:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7d3e9a41c2f0"
down_revision: str | Sequence[str] | None = "b5b6564b90b0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "action_quota",
        sa.Column("scope", sa.String(length=80), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "window_start"),
    )


def downgrade() -> None:
    op.drop_table("action_quota")
