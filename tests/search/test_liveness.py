"""Liveness against real SQLite storages: heartbeats make a dead worker's trial recognisably
stale, a trial known dead is failed at once, and opening the storage is silent."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tunefleet.config import parse_config
from tunefleet.search.liveness import fail_stale_trials, fail_trial, heartbeat
from tunefleet.search.study import make_sampler, make_storage, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_a_trial_that_beat_then_went_silent_is_failed_as_stale(tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the test's own one-second heartbeat storage
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{tmp_path / 'beats.db'}", heartbeat_interval=1, grace_period=1
        )
        study = optuna.create_study(storage=storage)
        beaten, silent = study.ask(), study.ask()
    with heartbeat(study, beaten):
        pass  # one beat, then the "worker" dies
    time.sleep(2.5)  # past the grace period; a longer wait changes nothing
    fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    # Optuna only fails trials that have beaten: the silent one proves the beat was recorded.
    assert states == {beaten.number: TrialState.FAIL, silent.number: TrialState.RUNNING}


def test_a_trial_known_dead_is_failed_at_once_and_only_while_running(tmp_path: Path) -> None:
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'dead.db'}"))
    dead, done = study.ask(), study.ask()
    study.tell(done, 1.0)
    assert fail_trial(study, dead.number)
    assert not fail_trial(study, dead.number)  # already failed
    assert not fail_trial(study, done.number)
    assert not fail_trial(study, 99)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]


def test_heartbeat_refuses_a_storage_without_heartbeats() -> None:
    study = optuna.create_study()
    trial = study.ask()
    with (
        pytest.raises(ValueError, match="InMemoryStorage records no heartbeats"),
        heartbeat(study, trial),
    ):
        pass


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_opening_storage_and_study_warns_nothing(
    tmp_path: Path, sentiment_csv: Path, sampler: str
) -> None:
    """Heartbeats and TPE's grouping are experimental in Optuna, and chosen on purpose: a
    read-only command that opens the study must print only its answer."""
    config = parse_config(
        {"name": "quiet", "data": {"train": str(sentiment_csv)}, "search": {"sampler": sampler}}
    )
    url = f"sqlite:///{tmp_path / 'quiet.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        open_study(config, storage=make_storage(url), create=True)
        make_sampler(config, worker=1)
        optuna.load_study(study_name="quiet", storage=make_storage(url))
