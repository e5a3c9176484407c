"""Initial tables: tf_sweeps, tf_trials, tf_best, tf_promotions.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "tf_sweeps",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("created", _utc(), nullable=False),
        sa.Column("budget", sa.Integer(), nullable=False),
        sa.Column("claimed", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("mlflow_experiment_id", sa.String(255), nullable=True),
        sa.Column("mlflow_parent_run_id", sa.String(255), nullable=True),
        sa.UniqueConstraint("name", name="uq_tf_sweeps_name"),
    )
    op.create_table(
        "tf_trials",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "sweep_id",
            sa.Integer(),
            sa.ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_trials_sweep"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("mlflow_run_id", sa.String(255), nullable=True),
        sa.Column("wandb_run_id", sa.String(255), nullable=True),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("checkpoint_sha256", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("pid", sa.Integer(), nullable=True),
        sa.Column("updated", _utc(), nullable=False),
        sa.UniqueConstraint("sweep_id", "number", name="uq_tf_trials_sweep_number"),
    )
    op.create_index("ix_tf_trials_sweep_id", "tf_trials", ["sweep_id"])
    op.create_table(
        "tf_best",
        sa.Column(
            "sweep_id",
            sa.Integer(),
            sa.ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_best_sweep"),
            primary_key=True,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("checkpoint", sa.Text(), nullable=True),
        sa.Column("updated", _utc(), nullable=False),
    )
    op.create_table(
        "tf_promotions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column(
            "sweep_id",
            sa.Integer(),
            sa.ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_promotions_sweep"),
            nullable=False,
        ),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("alias", sa.String(255), nullable=False),
        sa.Column("model_name", sa.String(255), nullable=False),
        sa.Column("model_version", sa.String(255), nullable=True),
        sa.Column("checkpoint", sa.Text(), nullable=False),
        sa.Column("created", _utc(), nullable=False),
    )
    op.create_index("ix_tf_promotions_sweep_id", "tf_promotions", ["sweep_id"])


def downgrade() -> None:
    op.drop_index("ix_tf_promotions_sweep_id", table_name="tf_promotions")
    op.drop_table("tf_promotions")
    op.drop_table("tf_best")
    op.drop_index("ix_tf_trials_sweep_id", table_name="tf_trials")
    op.drop_table("tf_trials")
    op.drop_table("tf_sweeps")
