"""Many workers on one database: 16 on PostgreSQL and 8 on SQLite run a sweep of very short real
trials (the tiny BERT, 48 rows, one thread each) through ``tunefleet sweep --workers N``: no lock
error, no trial lost or left RUNNING, the budget spent exactly, and on PostgreSQL the sweep's
connections stay within the per-worker bound (``SERVER_POOL`` + ``STORAGE_POOL``)."""

from __future__ import annotations

import csv
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import sqlalchemy as sa
from optuna.trial import TrialState

from support.cli import TUNEFLEET, cli_env
from support.configs import write_config
from support.postgres import fresh_database
from tunefleet.platform.store import Store
from tunefleet.platform.store.engine import SERVER_POOL
from tunefleet.search.study import STORAGE_POOL

pytestmark = pytest.mark.slow

PER_WORKER = sum(SERVER_POOL.values()) + sum(STORAGE_POOL.values())
LOCK_ERRORS = ("database is locked", "database table is locked", "OperationalError", "deadlock")


@pytest.fixture(scope="module")
def few_rows(sentiment_csv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    with sentiment_csv.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    picked = [r for r in rows if r["label"] == "0"][:24] + [r for r in rows if r["label"] == "1"][
        :24
    ]
    path = tmp_path_factory.mktemp("few") / "few.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(picked)
    return path


def sweep_file(tmp_path: Path, model: Path, data: Path, *, trials: int) -> Path:
    config = {
        "name": "many",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "max_length": 16},
        "train": {"epochs": 1, "batch_size": 16, "learning_rate": 3e-3},
        "search": {
            "trials": trials,
            "sampler": "random",
            "pruner": "none",
            "space": {"train.learning_rate": {"low": 1e-3, "high": 5e-3}},
        },
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    return write_config(tmp_path, config, name="many")


def run_sweep(config: Path, out: Path, db: str, workers: int) -> tuple[int, str]:
    result = subprocess.run(
        [
            *TUNEFLEET,
            "sweep",
            str(config),
            "--out",
            str(out),
            "--db",
            db,
            "--workers",
            f"{workers}",
        ],
        capture_output=True,
        text=True,
        env=cli_env(),
        timeout=850,
    )
    return result.returncode, result.stdout + result.stderr


def assert_exact(db: str, trials: int, code: int, output: str) -> None:
    assert code == 0, output[-4000:]
    assert not [e for e in LOCK_ERRORS if e in output], output[-4000:]
    study = optuna.load_study(study_name="many", storage=db)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == trials == len(states), states
    store = Store(db)
    try:
        assert store.get_sweep("many").claimed == trials
        records = store.trials("many")
        assert sorted(r.number for r in records) == list(range(trials))
        assert {r.state for r in records} == {"COMPLETE"}
    finally:
        store.dispose()


class ConnectionPeak:
    """Samples PostgreSQL's ``pg_stat_activity`` for one database while a sweep runs."""

    def __init__(self, admin_url: str, database: str) -> None:
        self.engine = sa.create_engine(admin_url, poolclass=sa.pool.NullPool)
        self.database, self.peak = database, 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        query = sa.text("SELECT count(*) FROM pg_stat_activity WHERE datname = :d")
        while not self.stop.wait(0.5):
            with self.engine.connect() as conn:
                count = conn.execute(query, {"d": self.database}).scalar_one()
            self.peak = max(self.peak, int(count))

    def __enter__(self) -> ConnectionPeak:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(10)
        self.engine.dispose()


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    # 16 workers and the launcher take up to 85 of PostgreSQL's 100 connections: no other
    # test of the suite may hold a database on the server meanwhile.
    with fresh_database(postgres_url, "tf_many", exclusive=True) as url:
        yield url


def test_sixteen_workers_on_postgres_spend_the_budget_exactly_within_the_pool_bound(
    tmp_path: Path, tiny_model: Path, few_rows: Path, pg_url: str, postgres_url: str
) -> None:
    trials, workers = 24, 16
    config = sweep_file(tmp_path, tiny_model, few_rows, trials=trials)
    with ConnectionPeak(postgres_url, sa.make_url(pg_url).database or "") as peak:
        code, output = run_sweep(config, tmp_path / "runs", pg_url, workers)
    assert_exact(pg_url, trials, code, output)
    # Every worker plus the launcher, each within its bound; well under PostgreSQL's 100.
    assert 0 < peak.peak <= (workers + 1) * PER_WORKER < 100, peak.peak


def test_eight_workers_on_sqlite_spend_the_budget_exactly(
    tmp_path: Path, tiny_model: Path, few_rows: Path
) -> None:
    trials, out = 12, tmp_path / "runs"
    config = sweep_file(tmp_path, tiny_model, few_rows, trials=trials)
    db = f"sqlite:///{out / 'tunefleet.db'}"
    code, output = run_sweep(config, out, db, 8)
    assert_exact(db, trials, code, output)
