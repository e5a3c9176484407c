"""tf_trials.live: a running trial's latest metrics, written by the store's telemetry sink.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("tf_trials") as batch:
        batch.add_column(sa.Column("live", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tf_trials") as batch:
        batch.drop_column("live")
