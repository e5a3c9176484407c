"""The SQL store: tunefleet's record of sweeps, trials, the best trial and promotions.

Its tables live next to Optuna's in the same database, so that one URL names everything a sweep
writes. Every process of a sweep (the launcher and each trial worker) opens its own
:class:`Store` on that URL; all methods are safe to call concurrently from several processes.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Row, delete, insert, select, text, update
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from tunefleet.errors import NotFoundError
from tunefleet.platform.store.engine import create_store_engine, retry_locked
from tunefleet.platform.store.models import (
    AliasMoveRow,
    Base,
    Best,
    PinRow,
    PromotionRow,
    Sweep,
    Trial,
    utcnow,
)
from tunefleet.redaction import redact_url

T = TypeVar("T")

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

#: State of a trial row created by :meth:`Store.upsert_trial` without a ``state``.
DEFAULT_TRIAL_STATE = "RUNNING"

# Any fixed 64-bit key works; deriving it from a name keeps it recognisable in pg_locks.
_PG_MIGRATION_LOCK_KEY = zlib.crc32(b"tunefleet.platform.store.migrations")

_MAX_NAME_LENGTH = 255


@dataclass(frozen=True)
class SweepRecord:
    """A sweep: its config, trial budget and how many trial slots are claimed."""

    name: str
    config: dict[str, Any]
    created: datetime
    budget: int
    claimed: int
    mlflow_experiment_id: str | None
    mlflow_parent_run_id: str | None


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a sweep, keyed by its Optuna trial number."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    mlflow_run_id: str | None
    wandb_run_id: str | None
    checkpoint: str | None
    checkpoint_sha256: dict[str, str] | None
    seconds: float | None
    host: str | None
    pid: int | None
    live: dict[str, Any] | None = None
    """A running trial's last step and latest metrics (the store's telemetry sink)."""
    attempt: int = 1
    """1 for a first attempt, then 2, 3, ... for retries of the same logical trial."""
    retry_of: int | None = None
    """The logical trial (its first attempt's number) this attempt retries."""
    reason: str | None = None
    """Why the attempt ended otherwise than complete or pruned: interrupted, stale, failed,
    non_finite, oom (``platform.retries``)."""
    reason_detail: str | None = None
    """The exception's last line, the step, or the batch size that goes with ``reason``."""
    requeued: bool = False
    """A retry was queued for this attempt: it is not failed for good."""
    objective_values: list[float] | None = None
    """A multi-objective trial's values, in ``search.objectives`` order."""
    measured: dict[str, float] | None = None
    """What tunefleet measured: trainable_params, total_params, checkpoint_mb, latency_ms,
    train_seconds (those known for the trial)."""
    feasible: bool | None = None
    """Whether ``search.constraints`` held; None without constraints or before the end."""
    device: str | None = None
    """``gpu`` or ``cpu``: what ``device_seconds`` counts."""
    device_seconds: float | None = None
    """Compute spent: training seconds x GPUs (or x torch threads on a CPU-only worker)."""
    checkpoint_bytes: int | None = None
    """The size on disk of the trial's best checkpoint when it was written."""
    checkpoint_removed: str | None = None
    """Why retention deleted the checkpoint; None while it is on disk."""


@dataclass(frozen=True)
class BestRecord:
    """The best trial of a sweep so far."""

    number: int
    value: float
    params: dict[str, Any]
    checkpoint: str | None


@dataclass(frozen=True)
class PromotionRecord:
    """A trial's checkpoint registered as a model version under an alias."""

    name: str
    number: int
    alias: str
    model_name: str
    model_version: str | None
    checkpoint: str
    created: datetime


@dataclass(frozen=True)
class PinRecord:
    """A trial whose checkpoint retention never deletes."""

    name: str
    number: int
    actor: str
    reason: str | None
    created: datetime


#: What an alias move was (:meth:`Store.record_alias_move`).
ALIAS_ACTIONS = ("register", "promote", "force", "gate-failed", "rollback")


@dataclass(frozen=True)
class AliasMove:
    """One entry of a registered model's alias history.

    ``action`` is one of :data:`ALIAS_ACTIONS`: ``register`` (a new version took an alias such
    as ``challenger``), ``promote`` (a gate passed and the alias moved), ``force`` (moved over
    the gate, with a reason), ``gate-failed`` (nothing moved; ``gate`` says why) and
    ``rollback``. ``from_version`` is None when the alias named no version before.
    """

    id: int
    model_name: str
    alias: str
    action: str
    from_version: str | None
    to_version: str | None
    sweep: str | None
    number: int | None
    actor: str
    reason: str | None
    gate: dict[str, Any] | None
    created: datetime


#: The fields :meth:`Store.upsert_trial` accepts.
TRIAL_FIELDS: frozenset[str] = frozenset(f.name for f in fields(TrialRecord)) - {"number"}


# --------------------------------------------------------------------------------------------
# Migrations


def migrate(engine: Engine) -> None:
    """Upgrade tunefleet's tables in ``engine``'s database to the newest revision.

    Idempotent, and safe when several processes migrate the same database at once: SQLite
    migrators are serialised by ``BEGIN IMMEDIATE`` and PostgreSQL ones by an advisory lock.
    Should a backend still report a table as already existing (another migrator won a race the
    lock did not cover), the upgrade is tried once more, and then finds nothing to do.

    Args:
        engine: An engine from :func:`~tunefleet.platform.store.engine.create_store_engine`.

    Raises:
        sqlalchemy.exc.SQLAlchemyError: The database refused the migration.
    """
    config = Config()
    # Config is a ConfigParser: a literal "%" in the path would start an interpolation.
    config.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    for attempt in range(2):
        try:
            retry_locked(lambda: _upgrade(engine, config))
            return
        except (OperationalError, IntegrityError, ProgrammingError) as exc:
            if attempt == 0 and "already exists" in str(exc).lower():
                continue
            raise


def _upgrade(engine: Engine, config: Config) -> None:
    with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            # Takes the write lock up front, so that a second migrator waits (busy_timeout) for
            # the first to commit and then sees the tables at head instead of racing to create
            # them.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            # A transaction-level lock: released by the commit below, never left on a pooled
            # connection.
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK_KEY}
            )
        config.attributes["connection"] = conn
        try:
            command.upgrade(config, "head")
        finally:
            config.attributes.pop("connection", None)
        conn.commit()


# --------------------------------------------------------------------------------------------
# Validation


def _check_name(name: object, what: str = "sweep name") -> str:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"invalid {what} {name!r}: expected a non-empty string")
    if len(name) > _MAX_NAME_LENGTH:
        raise ValueError(f"invalid {what} {name!r}: longer than {_MAX_NAME_LENGTH} characters")
    return name


def _check_count(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"invalid {what} {value!r}: expected an integer >= 0")
    return value


def _check_optional_str(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"invalid {what} {value!r}: expected a string or None")
    return value


def _check_json(value: object, what: str) -> None:
    try:
        # allow_nan=False: PostgreSQL rejects NaN/Infinity in JSON, so SQLite must too.
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"invalid {what} {value!r}: not storable as strict JSON ({exc})") from exc


def _check_dict(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"invalid {what} {value!r}: expected a dict with string keys")
    result = dict(value)
    _check_json(result, what)
    return result


def _check_real(value: object, what: str, *, finite: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"invalid {what} {value!r}: expected a number")
    number = float(value)
    if math.isnan(number) or (finite and math.isinf(number)):
        raise ValueError(f"invalid {what} {value!r}: expected a finite number")
    return number


def _check_trial_field(field: str, value: Any) -> Any:
    what = f"trial field {field!r}"
    if field == "state":
        return _check_name(value, what)
    if field == "params":
        return _check_dict(value, what)
    if field == "value":
        # SQLite would silently store NaN as NULL; infinities are legitimate objective values.
        return None if value is None else _check_real(value, what, finite=False)
    if field == "metrics":
        metrics = _check_dict(value, what)
        return {k: _check_real(v, f"{what}[{k!r}]", finite=True) for k, v in metrics.items()}
    if field == "history":
        if not isinstance(value, (list, tuple)) or not all(isinstance(e, Mapping) for e in value):
            raise ValueError(f"invalid {what} {value!r}: expected a list of dicts")
        history = [dict(e) for e in value]
        _check_json(history, what)
        return history
    if field == "checkpoint_sha256":
        if value is None:
            return None
        hashes = _check_dict(value, what)
        if not all(isinstance(v, str) for v in hashes.values()):
            raise ValueError(f"invalid {what} {value!r}: expected a dict of path -> hex string")
        return hashes
    if field == "seconds":
        return None if value is None else _check_real(value, what, finite=True)
    if field == "pid":
        return None if value is None else _check_count(value, what)
    if field == "live":
        if value is None:
            return None
        live = _check_dict(value, what)
        _check_json(live, what)
        return live
    if field == "attempt":
        attempt = _check_count(value, what)
        if attempt < 1:
            raise ValueError(f"invalid {what} {value!r}: expected 1 or more")
        return attempt
    if field == "retry_of":
        return None if value is None else _check_count(value, what)
    if field == "objective_values":
        if value is None:
            return None
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"invalid {what} {value!r}: expected a list of numbers")
        return [_check_real(v, what, finite=False) for v in value]
    if field == "measured":
        if value is None:
            return None
        measured = _check_dict(value, what)
        return {k: _check_real(v, f"{what}[{k!r}]", finite=True) for k, v in measured.items()}
    if field == "device_seconds":
        return None if value is None else _check_real(value, what, finite=True)
    if field == "checkpoint_bytes":
        return None if value is None else _check_count(value, what)
    if field in ("requeued", "feasible"):
        if value is None and field == "feasible":
            return None
        if not isinstance(value, bool):
            raise ValueError(f"invalid {what} {value!r}: expected true or false")
        return value
    # mlflow_run_id, wandb_run_id, checkpoint, host, reason, reason_detail
    return _check_optional_str(value, what)


# --------------------------------------------------------------------------------------------
# Rows to records


def _sweep_record(row: Row[Any]) -> SweepRecord:
    return SweepRecord(
        name=row.name,
        config=dict(row.config),
        created=row.created,
        budget=row.budget,
        claimed=row.claimed,
        mlflow_experiment_id=row.mlflow_experiment_id,
        mlflow_parent_run_id=row.mlflow_parent_run_id,
    )


def _trial_record(row: Row[Any]) -> TrialRecord:
    return TrialRecord(
        number=row.number,
        state=row.state,
        params=dict(row.params),
        value=row.value,
        metrics={k: float(v) for k, v in row.metrics.items()},
        history=[dict(e) for e in row.history],
        mlflow_run_id=row.mlflow_run_id,
        wandb_run_id=row.wandb_run_id,
        checkpoint=row.checkpoint,
        checkpoint_sha256=None if row.checkpoint_sha256 is None else dict(row.checkpoint_sha256),
        seconds=row.seconds,
        host=row.host,
        pid=row.pid,
        live=None if row.live is None else dict(row.live),
        attempt=row.attempt,
        retry_of=row.retry_of,
        reason=row.reason,
        reason_detail=row.reason_detail,
        requeued=bool(row.requeued),
        objective_values=None if row.objective_values is None else list(row.objective_values),
        measured=None if row.measured is None else dict(row.measured),
        feasible=row.feasible,
        device=row.device,
        device_seconds=row.device_seconds,
        checkpoint_bytes=row.checkpoint_bytes,
        checkpoint_removed=row.checkpoint_removed,
    )


def _promotion_record(name: str, row: Row[Any]) -> PromotionRecord:
    return PromotionRecord(
        name=name,
        number=row.number,
        alias=row.alias,
        model_name=row.model_name,
        model_version=row.model_version,
        checkpoint=row.checkpoint,
        created=row.created,
    )


_SWEEP_COLUMNS = (
    Sweep.name,
    Sweep.config,
    Sweep.created,
    Sweep.budget,
    Sweep.claimed,
    Sweep.mlflow_experiment_id,
    Sweep.mlflow_parent_run_id,
)


class Store:
    """tunefleet's tables in the database at ``url``, created or upgraded on construction.

    Args:
        url: A SQLAlchemy URL of a SQLite file or a PostgreSQL database, typically the same URL
            as the sweep's Optuna storage.

    Raises:
        ValueError: ``url`` is invalid or names an unsupported backend.
        sqlalchemy.exc.SQLAlchemyError: The database cannot be reached or migrated.
    """

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url:
            raise ValueError(f"invalid database URL {url!r}: expected a non-empty string")
        self._engine = create_store_engine(url)
        try:
            migrate(self._engine)
        except BaseException:
            self._engine.dispose()
            raise

    def __repr__(self) -> str:
        return f"Store(url={redact_url(self._engine.url.render_as_string(hide_password=False))!r})"

    def dispose(self) -> None:
        """Close the store's pooled connections. The store reconnects if used again."""
        self._engine.dispose()

    # ---------------------------------------------------------------------------------------
    # Helpers

    def _write(self, fn: Callable[[Connection], T]) -> T:
        def attempt() -> T:
            with self._engine.begin() as conn:
                return fn(conn)

        return retry_locked(attempt)

    def _read(self, fn: Callable[[Connection], T]) -> T:
        # A WAL reader is not normally blocked, but a checkpoint or schema change can still
        # return "locked" briefly.
        def attempt() -> T:
            with self._engine.connect() as conn:
                return fn(conn)

        return retry_locked(attempt)

    def _sweep_id(self, conn: Connection, name: str) -> int:
        sweep_id = conn.execute(select(Sweep.id).where(Sweep.name == name)).scalar_one_or_none()
        if sweep_id is None:
            self._not_found(conn, name)
        return sweep_id

    def _not_found(self, conn: Connection, name: str) -> NoReturn:
        # Listing the known names turns a typo into a one-glance fix.
        known = conn.execute(select(Sweep.name).order_by(Sweep.name).limit(21)).scalars().all()
        listing = ", ".join(known[:20]) + (", ..." if len(known) > 20 else "")
        raise NotFoundError(
            f"no sweep named {name!r} in {self!r}; "
            + (f"known sweeps: {listing}" if known else "the store has no sweeps")
        )

    def _upsert(
        self,
        conn: Connection,
        table: type[Base],
        *,
        keys: dict[str, Any],
        insert_values: dict[str, Any],
        update_values: dict[str, Any],
    ) -> None:
        # ON CONFLICT makes "create on first call" atomic when two processes upsert the same row.
        values = {**insert_values, **keys}
        if conn.dialect.name == "postgresql":
            pg_stmt = pg_dialect.insert(table).values(values)
            conn.execute(
                pg_stmt.on_conflict_do_update(index_elements=list(keys), set_=update_values)
            )
        else:
            lite_stmt = sqlite_dialect.insert(table).values(values)
            conn.execute(
                lite_stmt.on_conflict_do_update(index_elements=list(keys), set_=update_values)
            )

    # ---------------------------------------------------------------------------------------
    # Sweeps

    def create_sweep(self, name: str, *, config: dict[str, Any], budget: int) -> SweepRecord:
        """Create the sweep ``name``, or return it unchanged if it exists.

        A sweep that is resumed keeps the config and budget it was created with; use
        :meth:`set_budget` to change its budget.

        Args:
            name: The sweep's unique name.
            config: The sweep's config as a JSON-serialisable dict.
            budget: The number of trials the sweep may run (``>= 0``).

        Returns:
            The sweep as stored.

        Raises:
            ValueError: ``name``, ``config`` or ``budget`` is invalid.
        """
        _check_name(name)
        config = _check_dict(config, "sweep config")
        _check_count(budget, "budget")

        def op(conn: Connection) -> SweepRecord:
            values = {
                "name": name,
                "config": config,
                "created": utcnow(),
                "budget": budget,
                "claimed": 0,
            }
            # DO NOTHING rather than catching IntegrityError: a failed statement would abort a
            # PostgreSQL transaction, and a concurrent creator must simply win.
            if conn.dialect.name == "postgresql":
                pg_stmt = pg_dialect.insert(Sweep).values(values)
                conn.execute(pg_stmt.on_conflict_do_nothing(index_elements=["name"]))
            else:
                lite_stmt = sqlite_dialect.insert(Sweep).values(values)
                conn.execute(lite_stmt.on_conflict_do_nothing(index_elements=["name"]))
            row = conn.execute(select(*_SWEEP_COLUMNS).where(Sweep.name == name)).one()
            return _sweep_record(row)

        return self._write(op)

    def get_sweep(self, name: str) -> SweepRecord:
        """Return the sweep ``name``.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` is not a valid name.
        """
        _check_name(name)

        def op(conn: Connection) -> SweepRecord:
            row = conn.execute(select(*_SWEEP_COLUMNS).where(Sweep.name == name)).one_or_none()
            if row is None:
                self._not_found(conn, name)
            return _sweep_record(row)

        return self._read(op)

    def find_sweep(self, name: str) -> SweepRecord | None:
        """Return the sweep ``name``, or ``None`` if there is none.

        Raises:
            ValueError: ``name`` is not a valid name.
        """
        _check_name(name)

        def op(conn: Connection) -> SweepRecord | None:
            row = conn.execute(select(*_SWEEP_COLUMNS).where(Sweep.name == name)).one_or_none()
            return None if row is None else _sweep_record(row)

        return self._read(op)

    def sweep_names(self) -> list[str]:
        """Return the names of all sweeps, sorted."""
        return self._read(
            lambda conn: list(conn.execute(select(Sweep.name).order_by(Sweep.name)).scalars())
        )

    def set_budget(self, name: str, *, budget: int) -> None:
        """Set the number of trials the sweep may run.

        A budget below the number of claimed slots stops further claims; it does not release
        claimed ones.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` or ``budget`` (``>= 0``) is invalid.
        """
        _check_name(name)
        _check_count(budget, "budget")
        self._update_sweep(name, budget=budget)

    def set_config(self, name: str, *, config: dict[str, Any]) -> None:
        """Replace the sweep's config: a resumed sweep's, which may differ from the stored one
        only in the keys that say how much more to run (``launcher.RESUMABLE_KEYS``).

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` or ``config`` is invalid.
        """
        _check_name(name)
        self._update_sweep(name, config=_check_dict(config, "sweep config"))

    def set_mlflow_ids(self, name: str, *, experiment_id: str, parent_run_id: str) -> None:
        """Record the MLflow experiment and parent run of the sweep.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: An argument is not a non-empty string.
        """
        _check_name(name)
        _check_name(experiment_id, "MLflow experiment id")
        _check_name(parent_run_id, "MLflow parent run id")
        self._update_sweep(
            name, mlflow_experiment_id=experiment_id, mlflow_parent_run_id=parent_run_id
        )

    def _update_sweep(self, name: str, **values: Any) -> None:
        def op(conn: Connection) -> None:
            result = conn.execute(update(Sweep).where(Sweep.name == name).values(**values))
            if result.rowcount == 0:
                self._sweep_id(conn, name)

        self._write(op)

    def claim_slot(self, name: str) -> bool:
        """Atomically claim one of the sweep's trial slots.

        Exact under concurrency: across all processes, at most ``budget`` claims succeed (less
        those released by :meth:`release_slot`), since the check and the increment are one
        ``UPDATE``.

        Returns:
            ``True`` if a slot was claimed, ``False`` if the budget is used up.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` is not a valid name.
        """
        _check_name(name)

        def op(conn: Connection) -> bool:
            result = conn.execute(
                update(Sweep)
                .where(Sweep.name == name, Sweep.claimed < Sweep.budget)
                .values(claimed=Sweep.claimed + 1)
            )
            if result.rowcount == 1:
                return True
            self._sweep_id(conn, name)
            return False

        return self._write(op)

    def release_slot(self, name: str) -> None:
        """Give back a claimed slot (for a trial that did not run); never goes below zero.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` is not a valid name.
        """
        _check_name(name)

        def op(conn: Connection) -> None:
            result = conn.execute(
                update(Sweep)
                .where(Sweep.name == name, Sweep.claimed > 0)
                .values(claimed=Sweep.claimed - 1)
            )
            if result.rowcount == 0:
                self._sweep_id(conn, name)

        self._write(op)

    def set_claimed(self, name: str, *, claimed: int) -> None:
        """Set the number of claimed slots, e.g. to the trials that really ran when resuming.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` or ``claimed`` (``>= 0``) is invalid.
        """
        _check_name(name)
        _check_count(claimed, "claimed")
        self._update_sweep(name, claimed=claimed)

    # ---------------------------------------------------------------------------------------
    # Trials

    def upsert_trial(self, name: str, number: int, **fields: Any) -> None:
        """Create or update trial ``number`` of the sweep with the given fields.

        Only the fields passed are changed. A row created by this call takes ``state``
        :data:`DEFAULT_TRIAL_STATE`, empty ``params``, ``metrics`` and ``history``, and ``None``
        for the other fields it is not given.

        Args:
            name: The sweep's name.
            number: The Optuna trial number (``>= 0``).
            **fields: Fields of :class:`TrialRecord` other than ``number``. JSON fields must
                be strict JSON (no NaN or infinity); ``metrics`` values must be finite numbers;
                ``value`` may be infinite but not NaN.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``number``, a field's name or a field's value is invalid.
        """
        _check_name(name)
        _check_count(number, "trial number")
        unknown = sorted(set(fields) - TRIAL_FIELDS)
        if unknown:
            raise ValueError(
                f"unknown trial field(s) {', '.join(map(repr, unknown))}: "
                f"expected among {', '.join(sorted(TRIAL_FIELDS))}"
            )
        values = {k: _check_trial_field(k, v) for k, v in fields.items()}

        def op(conn: Connection) -> None:
            now = utcnow()
            sweep_id = self._sweep_id(conn, name)
            defaults: dict[str, Any] = {
                "state": DEFAULT_TRIAL_STATE,
                "params": {},
                "metrics": {},
                "history": [],
            }
            self._upsert(
                conn,
                Trial,
                keys={"sweep_id": sweep_id, "number": number},
                insert_values={**defaults, **values, "updated": now},
                update_values={**values, "updated": now},
            )

        self._write(op)

    def trials(self, name: str) -> list[TrialRecord]:
        """Return the sweep's trials, ordered by number.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` is not a valid name.
        """
        _check_name(name)

        def op(conn: Connection) -> list[TrialRecord]:
            sweep_id = self._sweep_id(conn, name)
            rows = conn.execute(
                select(Trial.__table__).where(Trial.sweep_id == sweep_id).order_by(Trial.number)
            )
            return [_trial_record(row) for row in rows]

        return self._read(op)

    def trial(self, name: str, number: int) -> TrialRecord | None:
        """Return trial ``number`` of the sweep, or ``None`` if it has no such trial.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` or ``number`` is invalid.
        """
        _check_name(name)
        _check_count(number, "trial number")

        def op(conn: Connection) -> TrialRecord | None:
            sweep_id = self._sweep_id(conn, name)
            row = conn.execute(
                select(Trial.__table__).where(Trial.sweep_id == sweep_id, Trial.number == number)
            ).one_or_none()
            return None if row is None else _trial_record(row)

        return self._read(op)

    # ---------------------------------------------------------------------------------------
    # Best trial

    def set_best(
        self,
        name: str,
        *,
        number: int,
        value: float,
        params: dict[str, Any],
        checkpoint: str | None,
    ) -> None:
        """Record trial ``number`` as the sweep's best, replacing any previous best.

        The caller decides what "best" means (the study's direction); the store does not
        compare values.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: An argument is invalid (``value`` must be a number, not NaN).
        """
        _check_name(name)
        _check_count(number, "trial number")
        best_value = _check_real(value, "best value", finite=False)
        best_params = _check_dict(params, "best params")
        _check_optional_str(checkpoint, "best checkpoint")

        def op(conn: Connection) -> None:
            values = {
                "number": number,
                "value": best_value,
                "params": best_params,
                "checkpoint": checkpoint,
                "updated": utcnow(),
            }
            self._upsert(
                conn,
                Best,
                keys={"sweep_id": self._sweep_id(conn, name)},
                insert_values=values,
                update_values=values,
            )

        self._write(op)

    def best(self, name: str) -> BestRecord | None:
        """Return the sweep's best trial, or ``None`` before one is recorded.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` is not a valid name.
        """
        _check_name(name)

        def op(conn: Connection) -> BestRecord | None:
            sweep_id = self._sweep_id(conn, name)
            row = conn.execute(
                select(Best.number, Best.value, Best.params, Best.checkpoint).where(
                    Best.sweep_id == sweep_id
                )
            ).one_or_none()
            if row is None:
                return None
            return BestRecord(
                number=row.number,
                value=row.value,
                params=dict(row.params),
                checkpoint=row.checkpoint,
            )

        return self._read(op)

    # ---------------------------------------------------------------------------------------
    # Promotions

    def record_promotion(
        self,
        name: str,
        *,
        number: int,
        alias: str,
        model_name: str,
        model_version: str | None,
        checkpoint: str,
    ) -> PromotionRecord:
        """Record that trial ``number``'s checkpoint was promoted under ``alias``.

        Promotions are a history: promoting again under the same alias adds a row, and
        :meth:`promotion` returns the latest.

        Args:
            name: The sweep's name.
            number: The promoted trial's number.
            alias: The alias, e.g. ``"champion"``.
            model_name: The registered model's name.
            model_version: The registered model version, if the registry assigned one.
            checkpoint: The promoted checkpoint's path or URI.

        Returns:
            The promotion as stored.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: An argument is invalid.
        """
        _check_name(name)
        _check_count(number, "trial number")
        _check_name(alias, "alias")
        _check_name(model_name, "model name")
        _check_optional_str(model_version, "model version")
        if not isinstance(checkpoint, str) or not checkpoint:
            raise ValueError(f"invalid checkpoint {checkpoint!r}: expected a non-empty string")

        def op(conn: Connection) -> PromotionRecord:
            created = utcnow()
            conn.execute(
                insert(PromotionRow).values(
                    sweep_id=self._sweep_id(conn, name),
                    number=number,
                    alias=alias,
                    model_name=model_name,
                    model_version=model_version,
                    checkpoint=checkpoint,
                    created=created,
                )
            )
            return PromotionRecord(
                name=name,
                number=number,
                alias=alias,
                model_name=model_name,
                model_version=model_version,
                checkpoint=checkpoint,
                created=created,
            )

        return self._write(op)

    def promotion(self, name: str, *, alias: str) -> PromotionRecord | None:
        """Return the latest promotion of the sweep under ``alias``, or ``None``.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` or ``alias`` is invalid.
        """
        _check_name(name)
        _check_name(alias, "alias")

        def op(conn: Connection) -> PromotionRecord | None:
            sweep_id = self._sweep_id(conn, name)
            # By id, not by time: ids grow with each insert, while hosts' clocks may disagree.
            row = conn.execute(
                select(PromotionRow.__table__)
                .where(PromotionRow.sweep_id == sweep_id, PromotionRow.alias == alias)
                .order_by(PromotionRow.id.desc())
                .limit(1)
            ).one_or_none()
            return None if row is None else _promotion_record(name, row)

        return self._read(op)

    def promotions(self, name: str) -> list[PromotionRecord]:
        """Return all promotions of the sweep, oldest first.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` is not a valid name.
        """
        _check_name(name)

        def op(conn: Connection) -> list[PromotionRecord]:
            sweep_id = self._sweep_id(conn, name)
            rows = conn.execute(
                select(PromotionRow.__table__)
                .where(PromotionRow.sweep_id == sweep_id)
                .order_by(PromotionRow.id)
            )
            return [_promotion_record(name, row) for row in rows]

        return self._read(op)

    # ---------------------------------------------------------------------------------------
    # Pins

    def pin(self, name: str, number: int, *, actor: str, reason: str | None = None) -> PinRecord:
        """Pin trial ``number``'s checkpoint: retention never deletes it. Pinning a pinned
        trial keeps the first pin and returns it.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: An argument is invalid.
        """
        _check_name(name)
        _check_count(number, "trial number")
        _check_name(actor, "actor")
        _check_optional_str(reason, "reason")

        def op(conn: Connection) -> PinRecord:
            sweep_id = self._sweep_id(conn, name)
            row = conn.execute(
                select(PinRow.__table__).where(PinRow.sweep_id == sweep_id, PinRow.number == number)
            ).one_or_none()
            if row is None:
                created = utcnow()
                conn.execute(
                    insert(PinRow).values(
                        sweep_id=sweep_id,
                        number=number,
                        actor=actor,
                        reason=reason,
                        created=created,
                    )
                )
                return PinRecord(name, number, actor, reason, created)
            return PinRecord(name, row.number, row.actor, row.reason, row.created)

        return self._write(op)

    def unpin(self, name: str, number: int) -> bool:
        """Remove trial ``number``'s pin; whether there was one.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: An argument is invalid.
        """
        _check_name(name)
        _check_count(number, "trial number")

        def op(conn: Connection) -> bool:
            sweep_id = self._sweep_id(conn, name)
            result = conn.execute(
                delete(PinRow).where(PinRow.sweep_id == sweep_id, PinRow.number == number)
            )
            return bool(result.rowcount)

        return self._write(op)

    def pins(self, name: str) -> list[PinRecord]:
        """The sweep's pins, by trial number.

        Raises:
            NotFoundError: No sweep has that name.
            ValueError: ``name`` is invalid.
        """
        _check_name(name)

        def op(conn: Connection) -> list[PinRecord]:
            sweep_id = self._sweep_id(conn, name)
            rows = conn.execute(
                select(PinRow.__table__).where(PinRow.sweep_id == sweep_id).order_by(PinRow.number)
            )
            return [PinRecord(name, r.number, r.actor, r.reason, r.created) for r in rows]

        return self._read(op)

    # ---------------------------------------------------------------------------------------
    # Alias history

    def record_alias_move(
        self,
        *,
        model_name: str,
        alias: str,
        action: str,
        from_version: str | None,
        to_version: str | None,
        actor: str,
        sweep: str | None = None,
        number: int | None = None,
        reason: str | None = None,
        gate: Mapping[str, Any] | None = None,
    ) -> AliasMove:
        """Append one entry to ``model_name``'s alias history (see :class:`AliasMove`).

        Keyed by the registered model's name, not a sweep: one model may take versions from
        several sweeps. Rows are never updated or deleted.

        Raises:
            ValueError: An argument is invalid (``action`` not in :data:`ALIAS_ACTIONS`, a gate
                that is not strict JSON, ...).
        """
        _check_name(model_name, "model name")
        _check_name(alias, "alias")
        if action not in ALIAS_ACTIONS:
            raise ValueError(f"invalid action {action!r}: expected one of {ALIAS_ACTIONS}")
        _check_optional_str(from_version, "from_version")
        _check_optional_str(to_version, "to_version")
        _check_name(actor, "actor")
        _check_optional_str(sweep, "sweep")
        if number is not None:
            _check_count(number, "trial number")
        _check_optional_str(reason, "reason")
        checked_gate = None if gate is None else _check_dict(gate, "gate")
        values = {
            "model_name": model_name,
            "alias": alias,
            "action": action,
            "from_version": from_version,
            "to_version": to_version,
            "sweep": sweep,
            "number": number,
            "actor": actor,
            "reason": reason,
            "gate": checked_gate,
        }

        def op(conn: Connection) -> AliasMove:
            created = utcnow()
            result = conn.execute(insert(AliasMoveRow).values(**values, created=created))
            (key,) = result.inserted_primary_key or (None,)
            return AliasMove(id=int(key or 0), created=created, **values)  # type: ignore[arg-type]

        return self._write(op)

    def alias_moves(self, model_name: str) -> list[AliasMove]:
        """``model_name``'s alias history, oldest first (empty for an unknown model).

        Raises:
            ValueError: ``model_name`` is invalid.
        """
        _check_name(model_name, "model name")

        def op(conn: Connection) -> list[AliasMove]:
            rows = conn.execute(
                select(AliasMoveRow.__table__)
                .where(AliasMoveRow.model_name == model_name)
                .order_by(AliasMoveRow.id)
            )
            return [
                AliasMove(
                    id=r.id,
                    model_name=r.model_name,
                    alias=r.alias,
                    action=r.action,
                    from_version=r.from_version,
                    to_version=r.to_version,
                    sweep=r.sweep,
                    number=r.number,
                    actor=r.actor,
                    reason=r.reason,
                    gate=None if r.gate is None else dict(r.gate),
                    created=r.created,
                )
                for r in rows
            ]

        return self._read(op)
