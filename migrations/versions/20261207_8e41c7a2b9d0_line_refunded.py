"""a line's refund: what the carrier credited back when it ended the line unused

Revision ID: 8e41c7a2b9d0
Revises: 3667ee1498a2
Create Date: 2026-12-07 13:30:00.000000

NULL: nothing was refunded (every line before it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8e41c7a2b9d0"
down_revision: str | Sequence[str] | None = "3667ee1498a2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("balance_line") as batch:
        batch.add_column(sa.Column("refunded_cents", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("balance_line") as batch:
        batch.drop_column("refunded_cents")
