"""Liveness against real SQLite storages: heartbeats make a dead worker's trial recognisably
stale, a trial known dead is failed at once, and opening the storage is silent."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from support.waiting import wait_for
from tunefleet.config import parse_config
from tunefleet.errors import ConfigError
from tunefleet.search.liveness import (
    StaleClock,
    fail_stale_trials,
    fail_trial,
    frozen_trial,
    heartbeat,
    taken_over,
)
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


def test_the_stale_clock_finds_a_silent_trial_while_nobody_asks(tmp_path: Path) -> None:
    """optuna#3293: Optuna looks for stale trials only when a worker asks. The clock looks every
    heartbeat interval, and hands each stale trial to the storage's callback exactly once."""
    found: list[int] = []
    storage = make_storage(
        f"sqlite:///{tmp_path / 'clock.db'}",
        heartbeat_s=1,
        stale_after_s=2,
        on_stale=lambda study, trial: found.append(trial.number),
    )
    study = optuna.create_study(storage=storage)
    silent, alive = study.ask(), study.ask()
    with heartbeat(study, silent):
        pass  # one beat, then its "worker" stops beating while nothing asks for a trial
    with heartbeat(study, alive), StaleClock(study):
        wait_for(lambda: found, timeout_s=60, what="the clock to find the silent trial")
        states = {t.number: t.state for t in study.get_trials(deepcopy=False)}
    assert found == [silent.number]
    assert states == {silent.number: TrialState.FAIL, alive.number: TrialState.RUNNING}


def test_heartbeat_and_grace_come_from_the_config(tmp_path: Path, sentiment_csv: Path) -> None:
    config = parse_config(
        {
            "name": "beats",
            "data": {"train": str(sentiment_csv)},
            "search": {"heartbeat_s": 3, "stale_after_s": 7},
        }
    )
    storage = make_storage(
        f"sqlite:///{tmp_path / 'b.db'}",
        heartbeat_s=config.search.heartbeat_s,
        stale_after_s=config.search.stale_after_s,
    )
    assert (storage.get_heartbeat_interval(), storage.grace_period) == (3, 7)
    with pytest.raises(ConfigError, match=r"stale_after_s \(5\) must exceed heartbeat_s"):
        parse_config(
            {
                "name": "beats",
                "data": {"train": str(sentiment_csv)},
                "search": {"heartbeat_s": 5, "stale_after_s": 5},
            }
        )


def test_a_worker_can_tell_its_trial_was_taken_over(tmp_path: Path) -> None:
    """A worker woken after being taken for dead must see that its trial is no longer its own."""
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 'over.db'}"))
    mine, other = study.ask(), study.ask()
    assert fail_trial(study, other.number)  # another process found its worker dead
    assert not taken_over(study, mine)
    assert taken_over(study, other)
    assert frozen_trial(study, other).state == TrialState.FAIL
