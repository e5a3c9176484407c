"""Conformance tests of the SQL store against real databases: a SQLite file and PostgreSQL.

Each PostgreSQL test gets a fresh database, created on the suite's server (the
``postgres_url`` fixture: the machine's, or a throwaway one; see tests/support/postgres.py) and
dropped afterwards. These tests fail rather than skip when no server can be had.
"""

from __future__ import annotations

import math
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from support.postgres import fresh_database
from tunefleet.errors import NotFoundError
from tunefleet.platform.store import (
    BestRecord,
    PromotionRecord,
    Store,
    SweepRecord,
    TrialRecord,
)
from tunefleet.platform.store.engine import create_store_engine
from tunefleet.platform.store.store import MIGRATIONS_DIR

_SCRIPTS = Config()
_SCRIPTS.set_main_option("script_location", str(MIGRATIONS_DIR))
HEAD = ScriptDirectory.from_config(_SCRIPTS).get_current_head()

# Spawn, not fork: a forked child would inherit the parent's pooled connections.
_SPAWN = multiprocessing.get_context("spawn")
_PROCESS_TIMEOUT_S = 60


# ------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url_any(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    """A URL of an empty database, once per supported backend."""
    if request.param == "sqlite":
        # Optuna, unlike the store, does not create a missing folder.
        (tmp_path / "runs").mkdir()
        yield f"sqlite:///{tmp_path / 'runs' / 'tunefleet.db'}"
    else:
        with fresh_database(request.getfixturevalue("postgres_url"), "tf_test") as url:
            yield url


@pytest.fixture
def store_url_postgres(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url, "tf_test") as url:
        yield url


@pytest.fixture
def store_any(store_url_any: str) -> Iterator[Store]:
    store = Store(store_url_any)
    try:
        yield store
    finally:
        store.dispose()


# ------------------------------------------------------------------------------------------
# Workers of the multi-process tests (module level, so that spawned children can import them)


def _construct_worker(url: str, barrier: Any, results: Any) -> None:
    try:
        barrier.wait(timeout=_PROCESS_TIMEOUT_S)
        store = Store(url)
        store.create_sweep("shared", config={}, budget=1)
        store.dispose()
        results.put("ok")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def _claim_worker(url: str, name: str, attempts: int, barrier: Any, results: Any) -> None:
    try:
        store = Store(url)
        barrier.wait(timeout=_PROCESS_TIMEOUT_S)
        results.put(sum(store.claim_slot(name) for _ in range(attempts)))
        store.dispose()
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def _run_processes(target: Any, args: tuple[Any, ...], count: int) -> list[Any]:
    barrier = _SPAWN.Barrier(count)
    results = _SPAWN.Queue()
    processes = [
        _SPAWN.Process(target=target, args=(*args, barrier, results)) for _ in range(count)
    ]
    for process in processes:
        process.start()
    try:
        out = [results.get(timeout=_PROCESS_TIMEOUT_S) for _ in processes]
    finally:
        for process in processes:
            process.join(timeout=_PROCESS_TIMEOUT_S)
            if process.is_alive():
                process.kill()
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return out


def _version_of(url: str, table: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [row[0] for row in conn.execute(text(f"SELECT version_num FROM {table}"))]
    finally:
        engine.dispose()


def _table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


TF_TABLES = {"tf_sweeps", "tf_trials", "tf_best", "tf_promotions", "tunefleet_alembic_version"}


# ------------------------------------------------------------------------------------------
# The conformance suite


class TestStoreConformance:
    # -- migrations --------------------------------------------------------------------------

    def test_migrates_next_to_an_optuna_study(self, store_url_any: str) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(store_url_any)
        study = optuna.create_study(storage=storage, study_name="s1")
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)

        store = Store(store_url_any)
        try:
            store.create_sweep("s1", config={"a": 1}, budget=3)
            assert store.claim_slot("s1")
            # Optuna still works on the database the store migrated.
            study = optuna.load_study(storage=storage, study_name="s1")
            study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
            assert len(study.trials) == 3
        finally:
            store.dispose()
            storage.engine.dispose()

        tables = _table_names(store_url_any)
        assert tables >= TF_TABLES
        assert {"studies", "trials", "alembic_version"} <= tables
        optuna_heads = _version_of(store_url_any, "alembic_version")
        assert _version_of(store_url_any, "tunefleet_alembic_version") == [HEAD]
        assert len(optuna_heads) == 1
        assert optuna_heads != [HEAD]

    def test_optuna_after_store(self, store_url_any: str) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        store = Store(store_url_any)
        storage = optuna.storages.RDBStorage(store_url_any)
        try:
            store.create_sweep("s1", config={}, budget=1)
            study = optuna.create_study(storage=storage, study_name="s1")
            study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
            assert store.sweep_names() == ["s1"]
        finally:
            store.dispose()
            storage.engine.dispose()
        assert _version_of(store_url_any, "tunefleet_alembic_version") == [HEAD]

    def test_an_older_database_upgrades_and_keeps_its_rows(self, store_url_any: str) -> None:
        engine = create_store_engine(store_url_any)
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.upgrade(config, "0001")
            conn.commit()
        engine.dispose()
        assert _version_of(store_url_any, "tunefleet_alembic_version") == ["0001"]
        # Written through today's Store after a manual downgrade would need the new column, so
        # the old row goes in by SQL, as a 0001-era tunefleet wrote it.
        with sa.create_engine(store_url_any).begin() as conn:
            conn.execute(
                sa.text(
                    "INSERT INTO tf_sweeps (name, config, created, budget, claimed) "
                    "VALUES ('old', '{}', '2026-01-01 00:00:00+00:00', 3, 1)"
                )
            )
        store = Store(store_url_any)
        try:
            store.upsert_trial("old", 0, state="COMPLETE", live={"step": 4, "metrics": {}})
            assert store.get_sweep("old").budget == 3
            assert store.trial("old", 0).live == {"step": 4, "metrics": {}}  # type: ignore[union-attr]
        finally:
            store.dispose()
        assert _version_of(store_url_any, "tunefleet_alembic_version") == [HEAD]

    def test_construction_is_idempotent(self, store_url_any: str) -> None:
        first = Store(store_url_any)
        first.create_sweep("s", config={"k": [1, 2]}, budget=2)
        second = Store(store_url_any)
        try:
            assert second.get_sweep("s") == first.get_sweep("s")
            assert _version_of(store_url_any, "tunefleet_alembic_version") == [HEAD]
        finally:
            first.dispose()
            second.dispose()

    def test_concurrent_construction_on_a_fresh_database(self, store_url_any: str) -> None:
        results = _run_processes(_construct_worker, (store_url_any,), count=3)
        assert results == ["ok"] * 3
        store = Store(store_url_any)
        try:
            assert store.sweep_names() == ["shared"]
        finally:
            store.dispose()

    # -- claims ------------------------------------------------------------------------------

    def test_claim_slot_is_exact_across_processes(
        self, store_any: Store, store_url_any: str
    ) -> None:
        store_any.create_sweep("race", config={}, budget=7)
        results = _run_processes(_claim_worker, (store_url_any, "race", 20), count=4)
        assert all(isinstance(r, int) for r in results), results
        assert sum(results) == 7
        assert store_any.get_sweep("race").claimed == 7

    def test_claim_slot_is_exact_across_threads(self, store_any: Store) -> None:
        store_any.create_sweep("race", config={}, budget=13)
        start = threading.Barrier(8)

        def claims(_: int) -> int:
            start.wait(timeout=_PROCESS_TIMEOUT_S)
            return sum(store_any.claim_slot("race") for _ in range(10))

        with ThreadPoolExecutor(8) as pool:
            assert sum(pool.map(claims, range(8))) == 13
        assert store_any.get_sweep("race").claimed == 13

    def test_claim_release_and_set_claimed(self, store_any: Store) -> None:
        store_any.create_sweep("s", config={}, budget=2)
        assert store_any.claim_slot("s")
        assert store_any.claim_slot("s")
        assert not store_any.claim_slot("s")
        store_any.release_slot("s")
        assert store_any.get_sweep("s").claimed == 1
        assert store_any.claim_slot("s")
        store_any.set_claimed("s", claimed=0)
        store_any.release_slot("s")  # never below zero
        assert store_any.get_sweep("s").claimed == 0
        store_any.set_budget("s", budget=3)
        assert [store_any.claim_slot("s") for _ in range(4)] == [True, True, True, False]
        store_any.set_budget("s", budget=0)
        assert not store_any.claim_slot("s")
        assert store_any.get_sweep("s").claimed == 3

    # -- sweeps ------------------------------------------------------------------------------

    def test_sweep_round_trip(self, store_any: Store) -> None:
        config = {"model": "m", "lr": [1e-5, 1e-3], "nested": {"x": None, "y": True}}
        created = store_any.create_sweep("b", config=config, budget=5)
        assert isinstance(created, SweepRecord)
        assert created.name == "b"
        assert created.config == config
        assert (created.budget, created.claimed) == (5, 0)
        assert created.mlflow_experiment_id is None
        assert created.mlflow_parent_run_id is None
        assert created.created.tzinfo is not None
        assert created.created.utcoffset() == timedelta(0)
        assert created.created.tzinfo == timezone.utc

        # An existing sweep is returned unchanged: config and budget are not overwritten.
        again = store_any.create_sweep("b", config={"other": 1}, budget=99)
        assert again == created
        assert store_any.get_sweep("b") == created
        assert store_any.find_sweep("b") == created
        assert store_any.find_sweep("missing") is None

        store_any.create_sweep("a", config={}, budget=0)
        assert store_any.sweep_names() == ["a", "b"]

        store_any.set_budget("b", budget=8)
        store_any.set_mlflow_ids("b", experiment_id="12", parent_run_id="abc")
        updated = store_any.get_sweep("b")
        assert updated.budget == 8
        assert (updated.mlflow_experiment_id, updated.mlflow_parent_run_id) == ("12", "abc")
        assert updated.config == config
        assert updated.created == created.created
        # A resume replaces the config (the launcher allows only RESUMABLE_KEYS to differ).
        store_any.set_config("b", config={**config, "lr": [1e-4]})
        assert store_any.get_sweep("b") == replace(updated, config={**config, "lr": [1e-4]})

    # -- trials ------------------------------------------------------------------------------

    def test_trial_round_trip(self, store_any: Store) -> None:
        store_any.create_sweep("s", config={}, budget=3)
        assert store_any.trials("s") == []
        assert store_any.trial("s", 0) is None

        store_any.upsert_trial("s", 1, state="RUNNING", params={"lr": 0.001, "opt": "adam"})
        store_any.upsert_trial("s", 0)
        assert store_any.trial("s", 0) == TrialRecord(
            number=0,
            state="RUNNING",
            params={},
            value=None,
            metrics={},
            history=[],
            mlflow_run_id=None,
            wandb_run_id=None,
            checkpoint=None,
            checkpoint_sha256=None,
            seconds=None,
            host=None,
            pid=None,
        )

        full: dict[str, Any] = {
            "state": "COMPLETE",
            "params": {"lr": 0.001, "opt": "adam", "layers": 2},
            "value": 0.123456789012345,
            "metrics": {"eval_accuracy": 0.9, "eval_loss": 1},
            "history": [{"step": 1, "loss": 2.5}, {"step": 2, "loss": 1.25, "note": "x"}],
            "mlflow_run_id": "run-1",
            "wandb_run_id": "wb-1",
            "checkpoint": "runs/s/trial-1/checkpoint",
            "checkpoint_sha256": {"model.safetensors": "ab" * 32, "config.json": "cd" * 32},
            "seconds": 12.5,
            "host": "node-7",
            "pid": 4242,
        }
        store_any.upsert_trial("s", 1, **full)
        trial = store_any.trial("s", 1)
        assert trial == TrialRecord(
            number=1, **{**full, "metrics": {"eval_accuracy": 0.9, "eval_loss": 1.0}}
        )
        assert trial is not None and isinstance(trial.metrics["eval_loss"], float)

        # A partial update changes only the fields passed; None clears a nullable field.
        store_any.upsert_trial("s", 1, state="PRUNED", checkpoint=None, checkpoint_sha256=None)
        trial = store_any.trial("s", 1)
        assert trial is not None
        assert (trial.state, trial.checkpoint, trial.checkpoint_sha256) == ("PRUNED", None, None)
        assert trial.params == full["params"]
        assert trial.history == full["history"]
        assert trial.value == full["value"]

        store_any.upsert_trial("s", 1, value=-math.inf)
        trial = store_any.trial("s", 1)
        assert trial is not None and trial.value == -math.inf

        assert [t.number for t in store_any.trials("s")] == [0, 1]

        # Trial numbers are per sweep.
        store_any.create_sweep("other", config={}, budget=1)
        store_any.upsert_trial("other", 1, state="FAIL")
        assert [t.state for t in store_any.trials("s")] == ["RUNNING", "PRUNED"]
        assert [t.state for t in store_any.trials("other")] == ["FAIL"]

    # -- best --------------------------------------------------------------------------------

    def test_best_round_trip(self, store_any: Store) -> None:
        store_any.create_sweep("s", config={}, budget=3)
        assert store_any.best("s") is None
        store_any.set_best("s", number=0, value=0.5, params={"lr": 0.1}, checkpoint=None)
        assert store_any.best("s") == BestRecord(
            number=0, value=0.5, params={"lr": 0.1}, checkpoint=None
        )
        store_any.set_best("s", number=2, value=0.25, params={"lr": 0.2}, checkpoint="ck/2")
        assert store_any.best("s") == BestRecord(
            number=2, value=0.25, params={"lr": 0.2}, checkpoint="ck/2"
        )

    # -- promotions --------------------------------------------------------------------------

    def test_promotions_round_trip(self, store_any: Store) -> None:
        store_any.create_sweep("s", config={}, budget=3)
        assert store_any.promotion("s", alias="champion") is None
        assert store_any.promotions("s") == []

        first = store_any.record_promotion(
            "s", number=0, alias="champion", model_name="m", model_version="1", checkpoint="c0"
        )
        assert isinstance(first, PromotionRecord)
        assert first.created.tzinfo == timezone.utc
        other = store_any.record_promotion(
            "s", number=1, alias="challenger", model_name="m", model_version=None, checkpoint="c1"
        )
        second = store_any.record_promotion(
            "s", number=2, alias="champion", model_name="m", model_version="2", checkpoint="c2"
        )
        assert store_any.promotion("s", alias="champion") == second
        assert store_any.promotion("s", alias="challenger") == other
        assert store_any.promotions("s") == [first, other, second]
        assert second == PromotionRecord(
            name="s",
            number=2,
            alias="champion",
            model_name="m",
            model_version="2",
            checkpoint="c2",
            created=second.created,
        )

    # -- pins and alias history ----------------------------------------------------------------

    def test_pins_round_trip(self, store_any: Store) -> None:
        store_any.create_sweep("s", config={}, budget=3)
        assert store_any.pins("s") == []
        first = store_any.pin("s", 2, actor="ann@host", reason="the paper's model")
        assert first.created.tzinfo == timezone.utc
        # Pinning twice keeps the first pin.
        assert store_any.pin("s", 2, actor="bob@host") == first
        store_any.pin("s", 0, actor="bob@host")
        assert [(p.number, p.actor) for p in store_any.pins("s")] == [
            (0, "bob@host"),
            (2, "ann@host"),
        ]
        assert store_any.unpin("s", 2) is True
        assert store_any.unpin("s", 2) is False
        assert [p.number for p in store_any.pins("s")] == [0]
        with pytest.raises(NotFoundError):
            store_any.pin("nope", 0, actor="a")

    def test_alias_moves_are_an_append_only_history(self, store_any: Store) -> None:
        assert store_any.alias_moves("m") == []
        register = store_any.record_alias_move(
            model_name="m",
            alias="challenger",
            action="register",
            from_version=None,
            to_version="1",
            actor="ann@host",
            sweep="s",
            number=3,
        )
        gate = {"checks": [{"name": "floor", "passed": True, "value": 0.9, "limit": 0.8}]}
        promote = store_any.record_alias_move(
            model_name="m",
            alias="champion",
            action="promote",
            from_version=None,
            to_version="1",
            actor="ann@host",
            sweep="s",
            number=3,
            gate=gate,
        )
        store_any.record_alias_move(
            model_name="other",
            alias="champion",
            action="force",
            from_version="4",
            to_version="5",
            actor="bob@host",
            reason="hotfix",
        )
        moves = store_any.alias_moves("m")
        assert moves == [register, promote]
        assert promote.id > register.id and promote.gate == gate
        assert promote.created.tzinfo == timezone.utc
        assert [m.reason for m in store_any.alias_moves("other")] == ["hotfix"]
        with pytest.raises(ValueError, match="action 'moved'"):
            store_any.record_alias_move(
                model_name="m",
                alias="champion",
                action="moved",
                from_version=None,
                to_version="1",
                actor="a",
            )
        with pytest.raises(ValueError, match="gate"):
            store_any.record_alias_move(
                model_name="m",
                alias="champion",
                action="promote",
                from_version=None,
                to_version="1",
                actor="a",
                gate={"x": float("nan")},
            )

    def test_checkpoint_size_and_removal_round_trip(self, store_any: Store) -> None:
        store_any.create_sweep("s", config={}, budget=1)
        store_any.upsert_trial("s", 0, checkpoint="ck/0", checkpoint_bytes=12_345_678_901)
        record = store_any.trial("s", 0)
        assert record is not None and record.checkpoint_bytes == 12_345_678_901
        assert record.checkpoint_removed is None
        store_any.upsert_trial("s", 0, checkpoint_removed="gc: pruned trial's leftovers")
        record = store_any.trial("s", 0)
        assert record is not None and record.checkpoint_removed == "gc: pruned trial's leftovers"
        with pytest.raises(ValueError, match="checkpoint_bytes"):
            store_any.upsert_trial("s", 0, checkpoint_bytes=-1)

    # -- errors ------------------------------------------------------------------------------

    def test_unknown_sweep_raises_not_found(self, store_any: Store) -> None:
        store_any.create_sweep("known", config={}, budget=1)
        calls: list[Callable[[], object]] = [
            lambda: store_any.get_sweep("nope"),
            lambda: store_any.set_budget("nope", budget=1),
            lambda: store_any.set_config("nope", config={}),
            lambda: store_any.set_mlflow_ids("nope", experiment_id="1", parent_run_id="2"),
            lambda: store_any.claim_slot("nope"),
            lambda: store_any.release_slot("nope"),
            lambda: store_any.set_claimed("nope", claimed=0),
            lambda: store_any.upsert_trial("nope", 0, state="RUNNING"),
            lambda: store_any.trials("nope"),
            lambda: store_any.trial("nope", 0),
            lambda: store_any.set_best("nope", number=0, value=1.0, params={}, checkpoint=None),
            lambda: store_any.best("nope"),
            lambda: store_any.record_promotion(
                "nope", number=0, alias="a", model_name="m", model_version=None, checkpoint="c"
            ),
            lambda: store_any.promotion("nope", alias="a"),
            lambda: store_any.promotions("nope"),
        ]
        for call in calls:
            with pytest.raises(NotFoundError, match=r"'nope'.*known"):
                call()
        # A failed lookup writes nothing.
        assert store_any.sweep_names() == ["known"]
        assert store_any.trials("known") == []

    def test_invalid_input_raises_value_error_naming_it(self, store_any: Store) -> None:
        store_any.create_sweep("s", config={}, budget=1)
        cases: list[tuple[str, Any]] = [
            ("''", lambda: store_any.create_sweep("", config={}, budget=1)),
            ("-1", lambda: store_any.create_sweep("t", config={}, budget=-1)),
            ("True", lambda: store_any.create_sweep("t", config={}, budget=True)),
            ("object", lambda: store_any.create_sweep("t", config={"x": object()}, budget=1)),
            ("nan", lambda: store_any.create_sweep("t", config={"x": math.nan}, budget=1)),
            ("'x'", lambda: store_any.set_budget("s", budget="x")),  # type: ignore[arg-type]
            ("-2", lambda: store_any.set_claimed("s", claimed=-2)),
            ("''", lambda: store_any.set_mlflow_ids("s", experiment_id="", parent_run_id="r")),
            ("'colour'", lambda: store_any.upsert_trial("s", 0, colour="red")),
            ("-1", lambda: store_any.upsert_trial("s", -1)),
            ("nan", lambda: store_any.upsert_trial("s", 0, value=math.nan)),
            ("'acc'", lambda: store_any.upsert_trial("s", 0, metrics={"acc": math.inf})),
            ("'acc'", lambda: store_any.upsert_trial("s", 0, metrics={"acc": "high"})),
            ("history", lambda: store_any.upsert_trial("s", 0, history=[1, 2])),
            ("'state'", lambda: store_any.upsert_trial("s", 0, state=None)),
            ("'params'", lambda: store_any.upsert_trial("s", 0, params=[1])),
            ("'pid'", lambda: store_any.upsert_trial("s", 0, pid=-5)),
            ("'host'", lambda: store_any.upsert_trial("s", 0, host=7)),
            ("sha256", lambda: store_any.upsert_trial("s", 0, checkpoint_sha256={"a": 1})),
            (
                "nan",
                lambda: store_any.set_best(
                    "s", number=0, value=math.nan, params={}, checkpoint=None
                ),
            ),
            (
                "''",
                lambda: store_any.record_promotion(
                    "s", number=0, alias="", model_name="m", model_version=None, checkpoint="c"
                ),
            ),
            (
                "''",
                lambda: store_any.record_promotion(
                    "s", number=0, alias="a", model_name="m", model_version=None, checkpoint=""
                ),
            ),
            ("None", lambda: store_any.promotion("s", alias=None)),  # type: ignore[arg-type]
            ("-3", lambda: store_any.trial("s", -3)),
        ]
        for expected, call in cases:
            with pytest.raises(ValueError, match=expected):
                call()
        # Rejected writes leave nothing behind.
        assert store_any.sweep_names() == ["s"]
        assert store_any.trials("s") == []
        assert store_any.get_sweep("s").claimed == 0


# ------------------------------------------------------------------------------------------
# Outside the conformance suite


def test_repr_masks_the_password(store_url_postgres: str) -> None:
    # Trust auth ignores the password, so any password connects.
    url = make_url(store_url_postgres).set(password="hunter2").render_as_string(hide_password=False)
    store = Store(url)
    try:
        assert "hunter2" not in repr(store)
        assert "***" in repr(store)
    finally:
        store.dispose()


def test_sqlite_file_is_in_wal_mode_with_foreign_keys(tmp_path: Any) -> None:
    store = Store(f"sqlite:///{tmp_path / 'new' / 'dir' / 'tf.db'}")
    try:
        engine = store._engine
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 60000
    finally:
        store.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [("mysql://u:pw@h/db", "'mysql'"), ("not a url", "not a url"), ("", "''")],
)
def test_unsupported_url_raises_value_error(url: str, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        Store(url)
