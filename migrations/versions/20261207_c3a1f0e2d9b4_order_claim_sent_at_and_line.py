"""order claim: when its first order left, and the line it bought

Revision ID: c3a1f0e2d9b4
Revises: 7d3e9a41c2f0
Create Date: 2026-12-07 05:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c3a1f0e2d9b4"
down_revision: str | Sequence[str] | None = "7d3e9a41c2f0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("order_claim") as batch:
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("line_id", sa.String(length=64), nullable=True))
    op.create_index("ix_order_claim_lease_until", "order_claim", ["lease_until"])


def downgrade() -> None:
    op.drop_index("ix_order_claim_lease_until", table_name="order_claim")
    with op.batch_alter_table("order_claim") as batch:
        batch.drop_column("line_id")
        batch.drop_column("sent_at")
