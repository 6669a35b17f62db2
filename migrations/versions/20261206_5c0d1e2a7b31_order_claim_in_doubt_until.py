"""order claim in doubt until

Revision ID: 5c0d1e2a7b31
Revises: 2909d601d6f0
Create Date: 2026-12-06 22:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "5c0d1e2a7b31"
down_revision: str | Sequence[str] | None = "2909d601d6f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_claim") as batch:
        batch.add_column(sa.Column("in_doubt_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("order_claim") as batch:
        batch.drop_column("in_doubt_until")
