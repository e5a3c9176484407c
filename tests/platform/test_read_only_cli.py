"""A user's read-only commands print only their answer: no library warnings on stderr."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import optuna
import pytest

from tunefleet.config import parse_config
from tunefleet.platform.store import Store
from tunefleet.search.study import make_storage, open_study


@pytest.fixture
def small_store(tmp_path: Path, sentiment_csv: Path) -> Path:
    """A sweep ``small`` under ``out``: its store record and Optuna study, one complete trial and
    one pruned."""
    out = tmp_path / "out"
    out.mkdir()
    url = f"sqlite:///{out / 'tunefleet.db'}"
    config = parse_config({"name": "small", "data": {"train": str(sentiment_csv)}})
    store = Store(url)
    store.create_sweep("small", config=config.model_dump(mode="json"), budget=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ask/tell with heartbeats: the worker's own concern
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = open_study(config, storage=make_storage(url), create=True)
        study.tell(study.ask(), 0.75)
        study.tell(study.ask(), state=optuna.trial.TrialState.PRUNED)
    store.dispose()
    return out


@pytest.mark.parametrize(
    "command",
    [["status", "small"], ["status", "small", "--json"], ["compare", "small"]],
    ids=" ".join,
)
def test_status_and_compare_print_no_warnings(small_store: Path, command: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tunefleet", *command, "--out", str(small_store)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "0.75" in result.stdout
    assert result.stderr == ""
