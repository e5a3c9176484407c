"""The model lifecycle: each trial's checkpoint size and whether retention removed it
(tf_trials.checkpoint_bytes, checkpoint_removed), pinned checkpoints (tf_pins) and the audit
trail of registry alias moves (tf_alias_moves).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    with op.batch_alter_table("tf_trials") as batch:
        batch.add_column(sa.Column("checkpoint_bytes", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("checkpoint_removed", sa.Text(), nullable=True))
    op.create_table(
        "tf_pins",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "sweep_id",
            sa.Integer(),
            sa.ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_pins_sweep"),
            nullable=False,
            index=True,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("sweep_id", "number", name="uq_tf_pins_sweep_number"),
    )
    op.create_table(
        "tf_alias_moves",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("model_name", sa.String(255), nullable=False, index=True),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("from_version", sa.String(255), nullable=True),
        sa.Column("to_version", sa.String(255), nullable=True),
        sa.Column("sweep", sa.String(255), nullable=True),
        sa.Column("number", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("gate", sa.JSON(), nullable=True),
        sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("tf_alias_moves")
    op.drop_table("tf_pins")
    with op.batch_alter_table("tf_trials") as batch:
        batch.drop_column("checkpoint_removed")
        batch.drop_column("checkpoint_bytes")
