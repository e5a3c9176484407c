"""Progress and ETAs from the live summary the store sink keeps (``platform.progress``)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from tunefleet.platform.progress import duration, running, sweep_eta, sweep_progress, trial_eta
from tunefleet.platform.store import Store

LIVE = {"total": 100, "step": 40, "since_step": 20, "since_ms": 0, "at_ms": 10_000}
"""20 steps in 10 s since the attempt (re)started at step 20: 0.5 s a step, 60 steps left."""


def test_a_trials_eta_is_its_remaining_steps_at_this_attempts_pace() -> None:
    assert trial_eta(LIVE, now_ms=10_000) == pytest.approx(30.0)
    # Counted down from its latest point; never below zero.
    assert trial_eta(LIVE, now_ms=15_000) == pytest.approx(25.0)
    assert trial_eta(LIVE, now_ms=100_000) == 0.0


@pytest.mark.parametrize(
    "live",
    [
        {},
        {**LIVE, "step": 20},  # nothing done since the (re)start: no pace yet
        {k: v for k, v in LIVE.items() if k != "total"},
    ],
)
def test_no_eta_without_a_pace_or_a_total(live: dict[str, int]) -> None:
    assert trial_eta(live, now_ms=10_000) is None


def test_the_sweeps_eta_spreads_the_trials_to_come_over_the_workers() -> None:
    a = running(1, 1, LIVE, 10.0, 10_000)  # 30 s left
    b = running(2, 2, {**LIVE, "step": 80, "since_step": 60}, 10.0, 10_000)  # 10 s left
    # Two trials still to start, 50 s each (the median finished), two workers:
    # (30 + 10 + 2 x 50) / 2 = 70 s.
    assert sweep_eta([a, b], finished_s=[40.0, 50.0, 60.0], pending=2, workers=2) == 70.0
    # Nothing left to start: the longest running trial.
    assert sweep_eta([a, b], finished_s=[50.0], pending=0, workers=2) == pytest.approx(30.0)
    # Before any trial finished, a trial takes what the running ones will: elapsed + ETA.
    assert sweep_eta([a], finished_s=[], pending=1, workers=1) == pytest.approx(30 + 40)
    no_pace = running(3, 1, {}, 1.0, 10_000)
    assert sweep_eta([a, no_pace], finished_s=[50.0], pending=1, workers=2) is None
    assert no_pace.cell() == "trial 3 · starting"
    # Nothing running and nothing left: no ETA (the sweep is done), not "0s".
    assert sweep_eta([], finished_s=[50.0], pending=0, workers=2) is None


def test_a_sweeps_progress_reads_optuna_and_the_store(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'p.db'}"
    store = Store(url)
    store.create_sweep("p", config={"name": "p"}, budget=4)
    study = optuna.create_study(study_name="p", storage=url)
    done = study.ask()
    study.tell(done, 0.5)
    store.upsert_trial("p", done.number, state="COMPLETE", seconds=50.0)
    live = study.ask()
    store.upsert_trial(
        "p", live.number, state="RUNNING", attempt=2, live={**LIVE, "worker": "1", "host": "h"}
    )
    trials = study.get_trials()
    start = trials[1].datetime_start
    assert start is not None
    now = int((start + timedelta(seconds=10)).timestamp() * 1000)
    progress = sweep_progress(
        trials, {r.number: r for r in store.trials("p")}, budget=4, workers=1, now=now
    )
    [run] = progress.runs
    assert (run.number, run.attempt, run.worker, run.host, run.step, run.total) == (
        1,
        2,
        "1",
        "h",
        40,
        100,
    )
    assert run.elapsed_s == pytest.approx(10.0, abs=0.01)
    eta = trial_eta(LIVE, now)
    assert eta is not None and progress.eta_s == pytest.approx(eta + 2 * 50.0)
    assert f"trial 1 (attempt 2) · w1@h · 40/100 · ETA {duration(eta)}" in progress.line()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    store.dispose()


def test_durations_read_like_a_clock() -> None:
    assert [duration(s) for s in (4.4, 65, 3600 + 125)] == ["4s", "1m05s", "1h02m"]
