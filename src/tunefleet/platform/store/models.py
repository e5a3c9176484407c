"""SQLAlchemy models of tunefleet's own tables.

They share a database with Optuna's tables, hence the ``tf_`` prefix and a version table of our
own (:data:`VERSION_TABLE`) so that our Alembic history never touches Optuna's
``alembic_version``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy import false as sa_false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

VERSION_TABLE = "tunefleet_alembic_version"
TABLE_PREFIX = "tf_"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend.

    SQLite has no timezone storage and drops the offset, so values are normalised to UTC before
    they are written and tagged as UTC when read back.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: tunefleet stores timezone-aware UTC only")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


# ``none_as_null`` keeps Python ``None`` as SQL NULL rather than the JSON literal ``null``.
NullableJSON = JSON(none_as_null=True)


class Base(DeclarativeBase):
    pass


class Sweep(Base):
    __tablename__ = "tf_sweeps"
    __table_args__ = (UniqueConstraint("name", name="uq_tf_sweeps_name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    config: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    budget: Mapped[int] = mapped_column(Integer, nullable=False)
    claimed: Mapped[int] = mapped_column(Integer, nullable=False, default=0, server_default="0")
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    mlflow_parent_run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)


class Trial(Base):
    __tablename__ = "tf_trials"
    __table_args__ = (UniqueConstraint("sweep_id", "number", name="uq_tf_trials_sweep_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_trials_sweep"),
        nullable=False,
        index=True,
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    state: Mapped[str] = mapped_column(String(32), nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON, nullable=False)
    history: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    wandb_run_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    checkpoint_sha256: Mapped[dict[str, str] | None] = mapped_column(NullableJSON, nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
    live: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, nullable=True)
    """While the trial runs: its last step and the latest value of each metric."""
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1, server_default="1")
    """1 for a first attempt; a retry of a dead worker's trial counts on from there."""
    retry_of: Mapped[int | None] = mapped_column(Integer, nullable=True)
    """The logical trial: the first attempt's number (None on a first attempt)."""
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """Why the attempt ended other than complete or pruned (``platform.retries.REASONS``)."""
    reason_detail: Mapped[str | None] = mapped_column(Text, nullable=True)
    """The exception's last line, the step, the batch size: what the reason needs."""
    requeued: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=sa_false()
    )
    """True when a retry was queued for this attempt (it is not failed for good)."""
    objective_values: Mapped[list[float] | None] = mapped_column(NullableJSON, nullable=True)
    """A multi-objective trial's values, in ``search.objectives`` order."""
    measured: Mapped[dict[str, float] | None] = mapped_column(NullableJSON, nullable=True)
    """What tunefleet measured of the trial: trainable_params, latency_ms, ... (MEASURED)."""
    feasible: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    """Whether ``search.constraints`` held (None: no constraints, or not finished)."""
    device: Mapped[str | None] = mapped_column(String(16), nullable=True)
    """What the trial's compute is counted in: ``gpu`` or ``cpu``."""
    device_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    """The trial's compute: seconds of training x its GPUs (or torch threads without one)."""
    checkpoint_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """The size on disk of the trial's best checkpoint when it was written."""
    checkpoint_removed: Mapped[str | None] = mapped_column(Text, nullable=True)
    """Why retention deleted the checkpoint (None while it is on disk)."""


class Best(Base):
    __tablename__ = "tf_best"

    sweep_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_best_sweep"),
        primary_key=True,
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    value: Mapped[float] = mapped_column(Float, nullable=False)
    params: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    checkpoint: Mapped[str | None] = mapped_column(Text, nullable=True)
    updated: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PromotionRow(Base):
    __tablename__ = "tf_promotions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_promotions_sweep"),
        nullable=False,
        index=True,
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    alias: Mapped[str] = mapped_column(String(255), nullable=False)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False)
    model_version: Mapped[str | None] = mapped_column(String(255), nullable=True)
    checkpoint: Mapped[str] = mapped_column(Text, nullable=False)
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class PinRow(Base):
    """A checkpoint retention must never delete (``tunefleet pin``)."""

    __tablename__ = "tf_pins"
    __table_args__ = (UniqueConstraint("sweep_id", "number", name="uq_tf_pins_sweep_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sweep_id: Mapped[int] = mapped_column(
        Integer,
        ForeignKey("tf_sweeps.id", ondelete="CASCADE", name="fk_tf_pins_sweep"),
        nullable=False,
        index=True,
    )
    number: Mapped[int] = mapped_column(Integer, nullable=False)
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)


class AliasMoveRow(Base):
    """One move of a registry alias (or a gate that refused to move it): the audit trail
    MLflow does not keep."""

    __tablename__ = "tf_alias_moves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(255), nullable=False, index=True)
    alias: Mapped[str] = mapped_column(String(255), nullable=False)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    from_version: Mapped[str | None] = mapped_column(String(255), nullable=True)
    to_version: Mapped[str | None] = mapped_column(String(255), nullable=True)
    sweep: Mapped[str | None] = mapped_column(String(255), nullable=True)
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str] = mapped_column(String(255), nullable=False)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    gate: Mapped[dict[str, Any] | None] = mapped_column(NullableJSON, nullable=True)
    created: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, default=utcnow)
