"""tf_trials: attempts and the failure taxonomy (attempt, retry_of, reason, reason_detail,
requeued), for trials retried after their worker died.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("tf_trials") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("retry_of", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("reason", sa.String(32), nullable=True))
        batch.add_column(sa.Column("reason_detail", sa.Text(), nullable=True))
        batch.add_column(
            sa.Column("requeued", sa.Boolean(), nullable=False, server_default=sa.false())
        )


def downgrade() -> None:
    with op.batch_alter_table("tf_trials") as batch:
        for column in ("requeued", "reason_detail", "reason", "retry_of", "attempt"):
            batch.drop_column(column)
