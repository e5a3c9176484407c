"""Many workers on PostgreSQL (the multi-host set-up), a worker joining from another shell, and
trials that fail: each is reported, gives its budget slot back, and loses nothing recorded."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from support.cli import TUNEFLEET, run_cli
from support.configs import write_config
from support.postgres import fresh_database
from support.waiting import wait_for
from tunefleet.platform.store import Store

pytestmark = pytest.mark.slow


def sweep_file(tmp_path: Path, model: Path, data: Path, name: str, **train: object) -> Path:
    config = {
        "name": name,
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "max_length": 32},
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 3e-3, **train},
        "search": {
            "trials": 4,
            "sampler": "random",
            "pruner": "none",
            "space": {"train.learning_rate": {"low": 1e-3, "high": 5e-3}},
        },
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    return write_config(tmp_path, config, name=name)


def sweep_exists(url: str, name: str) -> bool:
    store = Store(url)
    try:
        store.get_sweep(name)
    except Exception:  # not created yet
        return False
    finally:
        store.dispose()
    return True


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    with fresh_database(postgres_url, "tf_sweep") as url:
        yield url


def test_workers_on_postgres_and_a_joining_worker_spend_the_budget_exactly(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, pg_url: str
) -> None:
    config = sweep_file(tmp_path, tiny_model, sentiment_csv, "pg")
    out = tmp_path / "runs"
    sweep = subprocess.Popen(
        [
            *TUNEFLEET,
            "sweep",
            str(config),
            "--out",
            str(out),
            "--db",
            pg_url,
            "--workers",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    joined = None
    try:
        # The sweep record exists once the launcher has prepared it; then a third worker joins.
        wait_for(lambda: sweep_exists(pg_url, "pg"), every_s=0.5, what="the sweep record")
        joined = run_cli("worker", "pg", "--out", str(out), "--db", pg_url, "--threads", "1")
        output, _ = sweep.communicate(timeout=300)
    finally:
        sweep.kill()
    assert sweep.returncode == 0, output
    assert joined is not None and joined.returncode == 0, joined.stdout + joined.stderr
    trials = optuna.load_study(study_name="pg", storage=pg_url).trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE for t in trials)
    assert Store(pg_url).get_sweep("pg").claimed == 4
    assert not (out / "tunefleet.db").exists()  # --db decides where study and store live


def test_failing_trials_are_reported_and_the_sweep_exits_nonzero(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    config = sweep_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        "broken",
        method="lora",
        lora={"target_modules": ["no_such_module"]},
    )
    out = tmp_path / "runs"
    result = run_cli("sweep", str(config), "--out", str(out))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "train.lora.target_modules" in result.stdout and "no_such_module" in result.stdout
    store = Store(f"sqlite:///{out / 'tunefleet.db'}")
    trials = store.trials("broken")
    assert [t.state for t in trials] == ["FAIL"] * 3  # three in a row stop the worker
    assert store.get_sweep("broken").claimed == 0  # each failure gave its slot back
    study = optuna.load_study(study_name="broken", storage=f"sqlite:///{out / 'tunefleet.db'}")
    assert all("no_such_module" in t.user_attrs["fail_reason"] for t in study.trials)


def test_unknown_sweep_names_are_clear(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out = tmp_path / "runs"
    missing = run_cli("status", "nope", "--out", str(out), timeout=60)
    assert missing.returncode == 2 and "no sweeps under" in missing.stderr
    Store(f"sqlite:///{out / 'tunefleet.db'}").create_sweep("other", config={}, budget=1)
    unknown = run_cli("promote", "nope", "--out", str(out), timeout=60)
    assert unknown.returncode == 2 and "nope" in unknown.stderr and "other" in unknown.stderr


def test_the_method_is_a_search_dimension_with_its_own_subspaces(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    """A grid over four methods runs each once through the worker loop, and each trial's
    recorded params hold only its own method's sub-space."""
    config = yaml.safe_load(sweep_file(tmp_path, tiny_model, sentiment_csv, "methods").read_text())
    config["search"].update(
        sampler="grid",
        trials=10,
        space={
            "train.method": {"choices": ["adapter", "prefix", "ia3", "unfreeze"]},
            "train.adapter.size": {"choices": [8]},
            "train.prefix.virtual_tokens": {"choices": [4]},
            "train.unfreeze.blocks_per_step": {"choices": [1]},
        },
    )
    path = write_config(tmp_path, config, name="methods")
    out = tmp_path / "runs"
    result = run_cli("sweep", str(path), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 trials" in result.stdout  # the budget is capped at the grid's size
    study = optuna.load_study(study_name="methods", storage=f"sqlite:///{out / 'tunefleet.db'}")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    own = {
        "adapter": "train.adapter.size",
        "prefix": "train.prefix.virtual_tokens",
        "unfreeze": "train.unfreeze.blocks_per_step",
        "ia3": None,
    }
    assert sorted(t.params["train.method"] for t in study.trials) == sorted(own)
    for trial in study.trials:
        method = trial.params["train.method"]
        expected = {"train.method"} | ({own[method]} if own[method] else set())
        assert set(trial.params) == expected, trial.params
