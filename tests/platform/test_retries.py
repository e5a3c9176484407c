"""Trials that survive their workers, against real storages and real processes.

The taxonomy (``platform.retries``) on a real Optuna study and store; then real sweeps whose
worker is killed with SIGKILL, stopped with SIGSTOP (a heartbeat that stops while the process
lives) or sent SIGTERM: the trial is retried with the same params from its resumable state.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from support.postgres import fresh_database
from tunefleet.platform.layout import Layout
from tunefleet.platform.retries import Retries, attempt_of, failure_stop, halved_batch
from tunefleet.platform.store import Store

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'retries.db'}"
        return
    server: str = request.getfixturevalue("postgres_url")
    with fresh_database(server, "tf_retries") as url:
        yield url


def _sweep(db_url: str, tmp_path: Path, *, max_retries: int) -> tuple[optuna.Study, Store, Retries]:
    store = Store(db_url)
    store.create_sweep("r", config={}, budget=3)
    study = optuna.create_study(study_name="r", storage=db_url)
    retries = Retries(store, "r", max_retries=max_retries, layout=Layout.at(tmp_path))
    return study, store, retries


def _dies(study: optuna.Study, store: Store) -> optuna.trial.FrozenTrial:
    """A worker claims a slot, asks, draws its params and dies: the trial is failed."""
    assert store.claim_slot("r")
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-2, log=True)
    study.tell(trial, state=TrialState.FAIL)
    [frozen] = [t for t in study.get_trials() if t.number == trial.number]
    return frozen


def test_an_interrupted_trial_is_retried_with_its_params_until_max_retries(
    db_url: str, tmp_path: Path
) -> None:
    study, store, retries = _sweep(db_url, tmp_path, max_retries=2)
    first = _dies(study, store)
    attempts = [first]
    while retries.end(study, attempts[-1], reason="interrupted", detail="worker died"):
        attempts.append(_dies(study, store))
    # Two retries, then failed: three attempts of one logical trial, each with the same params.
    assert [attempt_of(t).attempt for t in attempts] == [1, 2, 3]
    assert {attempt_of(t).logical for t in attempts} == {first.number}
    assert [t.params for t in attempts] == [first.params] * 3
    assert attempts[1].distributions == {"lr": FloatDistribution(1e-4, 1e-2, log=True)}
    rows = {r.number: r for r in store.trials("r")}
    assert [(rows[t.number].requeued, rows[t.number].retry_of) for t in attempts] == [
        (True, None),
        (True, first.number),
        (False, first.number),
    ]
    assert "search.max_retries" in (rows[attempts[-1].number].reason_detail or "")
    # Every dead attempt gave its slot back: the budget counts logical trials.
    assert store.get_sweep("r").claimed == 0
    assert not study.get_trials(states=(TrialState.WAITING,))
    store.dispose()


@pytest.mark.parametrize("reason", ["failed", "non_finite", "invalid_params", "oom"])
def test_the_codes_faults_are_never_retried(reason: str, tmp_path: Path) -> None:
    study, store, retries = _sweep(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, max_retries=2)
    dead = _dies(study, store)
    assert not retries.end(study, dead, reason=reason, detail="step 3: loss")
    assert not study.get_trials(states=(TrialState.WAITING,))
    [row] = store.trials("r")
    assert (row.state, row.reason, row.reason_detail, row.requeued) == (
        "FAIL",
        reason,
        "step 3: loss",
        False,
    )
    store.dispose()


def test_an_oom_retry_halves_the_batch_and_doubles_the_accumulation(tmp_path: Path) -> None:
    study, store, retries = _sweep(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, max_retries=0)
    dead = _dies(study, store)
    overrides = halved_batch(32, 1)
    assert overrides == {"train.batch_size": 16, "train.gradient_accumulation_steps": 2}
    assert retries.end(study, dead, reason="oom", detail="batch 32", overrides=overrides)
    retry = _dies(study, store)
    assert attempt_of(retry).overrides == overrides
    assert retry.params == dead.params
    assert halved_batch(1, 4) is None  # nothing left to halve: failed with its batch size
    store.dispose()


def test_max_failures_names_the_most_frequent_reason(tmp_path: Path) -> None:
    study, store, retries = _sweep(f"sqlite:///{tmp_path / 'r.db'}", tmp_path, max_retries=1)
    for reason in ["non_finite", "interrupted", "failed", "non_finite"]:
        retries.end(study, _dies(study, store), reason=reason, detail="")
    # The interrupted attempt was re-queued: it is no failure; three are.
    assert failure_stop(store, "r", None) is None
    assert failure_stop(store, "r", 4) is None
    message = failure_stop(store, "r", 3)
    assert message is not None
    assert "3 trials failed" in message and "non_finite (2 of 3)" in message
    store.dispose()
