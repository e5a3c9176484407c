"""tf_trials: what a multi-objective, constrained, budgeted search records per trial
(objective_values, measured, feasible, device, device_seconds).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("tf_trials") as batch:
        batch.add_column(sa.Column("objective_values", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("measured", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("feasible", sa.Boolean(), nullable=True))
        batch.add_column(sa.Column("device", sa.String(16), nullable=True))
        batch.add_column(sa.Column("device_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tf_trials") as batch:
        for column in ("device_seconds", "device", "feasible", "measured", "objective_values"):
            batch.drop_column(column)
