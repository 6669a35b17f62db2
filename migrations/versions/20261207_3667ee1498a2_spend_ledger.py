"""spend ledger: a product's currency, a line's price as bought, customer refs

Revision ID: 3667ee1498a2
Revises: d4b2e1f3a5c6
Create Date: 2026-12-07 10:45:47.411649

Lines bought before it keep a NULL price: spend reports count them as unpriced, never 0.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3667ee1498a2"
down_revision: str | Sequence[str] | None = "d4b2e1f3a5c6"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("product") as batch:
        batch.add_column(
            sa.Column("currency", sa.String(length=3), server_default="USD", nullable=False)
        )
    with op.batch_alter_table("balance_line") as batch:
        batch.add_column(sa.Column("price_cents", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
        batch.create_index("ix_balance_line_ordered_at", ["ordered_at"], unique=False)
    with op.batch_alter_table("esim") as batch:
        batch.add_column(sa.Column("customer_ref", sa.String(length=64), nullable=True))
    with op.batch_alter_table("balance") as batch:
        batch.add_column(sa.Column("customer_ref", sa.String(length=64), nullable=True))
        batch.create_index("ix_balance_customer_ref", ["customer_ref"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("balance") as batch:
        batch.drop_index("ix_balance_customer_ref")
        batch.drop_column("customer_ref")
    with op.batch_alter_table("esim") as batch:
        batch.drop_column("customer_ref")
    with op.batch_alter_table("balance_line") as batch:
        batch.drop_index("ix_balance_line_ordered_at")
        batch.drop_column("currency")
        batch.drop_column("price_cents")
    with op.batch_alter_table("product") as batch:
        batch.drop_column("currency")
