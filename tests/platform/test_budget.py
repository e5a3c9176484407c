"""Compute budgets and cost (``search.budget``, ``platform/cost.py``).

Attempts' device-seconds and the budget gate on real Optuna studies (SQLite, ask/tell) and a real
store; then a real sweep through the CLI that a CPU-hours budget stops before it is exceeded,
whose ``status --json`` and ``compare`` figures add up.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from support.cli import TUNEFLEET, cli_env
from support.configs import write_config
from tunefleet.config import BudgetConfig, SearchConfig, SweepConfig
from tunefleet.platform.cost import (
    COMPUTE_ATTR,
    Compute,
    budget_stop,
    compute_of,
    record_cost,
    sweep_cost,
    worker_compute,
)
from tunefleet.platform.launcher import requeue_dead_workers
from tunefleet.platform.layout import Layout
from tunefleet.platform.retries import Retries
from tunefleet.platform.store import Store
from tunefleet.platform.worker import WorkerOptions, start_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _sweep(tmp_path: Path) -> tuple[optuna.Study, Store, Retries]:
    url = f"sqlite:///{tmp_path / 'cost.db'}"
    store = Store(url)
    store.create_sweep("c", config={}, budget=10)
    study = optuna.create_study(study_name="c", storage=url, direction="maximize")
    return study, store, Retries(store, "c", max_retries=2, layout=Layout.at(tmp_path))


def _start(study: optuna.Study, *, device: str = "cpu", units: int = 2) -> optuna.Trial:
    trial = study.ask()
    trial.set_user_attr(COMPUTE_ATTR, {"device": device, "units": units})
    time.sleep(0.02)  # a duration Optuna's microsecond datetimes can tell from zero
    return trial


def _frozen(study: optuna.Study, number: int) -> FrozenTrial:
    return next(t for t in study.get_trials() if t.number == number)


def _fail(study: optuna.Study, retries: Retries, trial: optuna.Trial, reason: str) -> FrozenTrial:
    """Told FAIL and ended as the worker's ``_fail`` ends it."""
    study.tell(trial, state=TrialState.FAIL)
    frozen = _frozen(study, trial.number)
    retries.end(study, frozen, reason=reason, detail="test")
    return frozen


def _device_s(trial: FrozenTrial, units: int, now: datetime | None = None) -> float:
    start, end = trial.datetime_start, trial.datetime_complete or now
    assert start is not None and end is not None
    return (end - start).total_seconds() * units


def test_every_attempt_counts_its_duration_times_its_units(tmp_path: Path) -> None:
    study, store, retries = _sweep(tmp_path)
    complete, pruned, failed, gpu, running = (
        _start(study),
        _start(study),
        _start(study, units=3),
        _start(study, device="gpu", units=2),
        _start(study),
    )
    study.tell(complete, 0.5)
    study.tell(pruned, state=TrialState.PRUNED)
    _fail(study, retries, failed, "failed")
    study.tell(gpu, 0.7)
    study.enqueue_trial({})  # waiting: nothing spent
    for told in (complete, pruned, gpu):
        record_cost(store, "c", _frozen(study, told.number))
    now = datetime.now()
    trials = study.get_trials()
    budget = BudgetConfig(cpu_hours=1.0, gpu_hours=0.5, price_per_cpu_hour=2.0)
    cost = sweep_cost(trials, budget, now=now)

    expected = {
        complete.number: ("cpu", _device_s(trials[0], 2)),
        pruned.number: ("cpu", _device_s(trials[1], 2)),
        failed.number: ("cpu", _device_s(trials[2], 3)),
        gpu.number: ("gpu", _device_s(trials[3], 2)),
        running.number: ("cpu", _device_s(trials[4], 2, now)),
    }
    assert {n: (c.device, c.device_seconds) for n, c in cost.attempts.items()} == expected
    assert all(seconds > 0 for _, seconds in expected.values())
    # The store keeps the ended attempts' figures, a failed one's from Retries.end.
    records = {r.number: r for r in store.trials("c")}
    for number in (complete.number, pruned.number, failed.number, gpu.number):
        assert (records[number].device, records[number].device_seconds) == expected[number]
    assert records.get(running.number) is None or records[running.number].device_seconds is None

    shown = cost.json()
    cpu_spent = sum(s for d, s in expected.values() if d == "cpu") / 3600
    assert shown["cpu_hours"]["spent"] == pytest.approx(cpu_spent, rel=1e-12)
    assert shown["cpu_hours"]["limit"] == 1.0
    assert shown["cpu_hours"]["remaining"] == 1.0 - shown["cpu_hours"]["spent"]
    assert shown["cpu_hours"]["money"] == pytest.approx(2.0 * cpu_spent, rel=1e-12)
    assert shown["gpu_hours"]["spent"] == pytest.approx(expected[gpu.number][1] / 3600)
    assert shown["gpu_hours"]["money"] is None  # no price_per_gpu_hour
    store.dispose()


def test_the_gate_holds_the_remaining_budget_against_the_median_finished_trial(
    tmp_path: Path,
) -> None:
    study, store, retries = _sweep(tmp_path)
    first_failure = _start(study)
    _fail(study, retries, first_failure, "failed")
    # A failed attempt spends, but with no trial finished a start is allowed while any remains.
    spent = sweep_cost(study.get_trials(), BudgetConfig()).spent_hours("cpu")
    assert sweep_cost(study.get_trials(), BudgetConfig(cpu_hours=spent * 1.01)).stop("cpu") is None
    stop = sweep_cost(study.get_trials(), BudgetConfig(cpu_hours=spent * 0.99)).stop("cpu")
    assert stop is not None and stop.endswith("no new trial") and "median" not in stop
    # The gate holds back what the watcher would (two looks at the attempts' 2 units): no trial
    # starts only to be stopped at once.
    search = SearchConfig(heartbeat_s=1, budget=BudgetConfig(cpu_hours=spent + 5 / 3600))
    assert budget_stop(study, search, "cpu") is None  # 5 device-seconds left > 2 x 1 s x 2
    search = SearchConfig(heartbeat_s=1, budget=BudgetConfig(cpu_hours=spent + 3 / 3600))
    assert budget_stop(study, search, "cpu") is not None  # 3 left < 4 held back

    a = _start(study)
    study.tell(a, 0.5)
    dead = _start(study)
    _fail(study, retries, dead, "interrupted")  # re-queued: its retry finishes logical trial
    retry = study.ask()
    assert retry.user_attrs["retry_of"] == dead.number
    assert COMPUTE_ATTR not in retry.user_attrs  # an attempt's compute is its own
    retry.set_user_attr(COMPUTE_ATTR, {"device": "cpu", "units": 2})
    time.sleep(0.02)
    study.tell(retry, 0.6)
    b = _start(study, units=4)
    study.tell(b, state=TrialState.PRUNED)

    trials = {t.number: t for t in study.get_trials()}
    cost = sweep_cost(list(trials.values()), BudgetConfig())
    per_trial = [
        _device_s(trials[a.number], 2),
        _device_s(trials[dead.number], 2) + _device_s(trials[retry.number], 2),
        _device_s(trials[b.number], 4),
    ]
    median = statistics.median(per_trial) / 3600
    assert cost.median_trial_hours("cpu") == pytest.approx(median, rel=1e-12)
    spent = cost.spent_hours("cpu")
    assert spent == pytest.approx(
        (sum(per_trial) + _device_s(trials[first_failure.number], 2)) / 3600, rel=1e-12
    )
    assert (
        sweep_cost(study.get_trials(), BudgetConfig(cpu_hours=spent + 1.01 * median)).stop("cpu")
        is None
    )
    stop = sweep_cost(study.get_trials(), BudgetConfig(cpu_hours=spent + 0.99 * median)).stop("cpu")
    assert stop == (
        f"budget: {spent:.3g} of {spent + 0.99 * median:.3g} cpu-hours spent; "
        f"the median trial costs {median:.3g}; no new trial"
    )
    # A running attempt will likely spend up to the median still: what remains must cover
    # that and the new trial's median (so that workers starting together do not all count the
    # same remainder). Seen the instant it started, it needs the whole median.
    running = _start(study)
    started = _frozen(study, running.number).datetime_start
    with_running = sweep_cost(
        study.get_trials(), BudgetConfig(cpu_hours=spent + 1.5 * median), now=started
    )
    assert with_running.running_need_hours("cpu", median) == pytest.approx(median, rel=1e-9)
    stop = with_running.stop("cpu")
    assert stop is not None and f"running trials may need {median:.3g} more" in stop
    assert (
        sweep_cost(
            study.get_trials(), BudgetConfig(cpu_hours=spent + 2.01 * median), now=started
        ).stop("cpu")
        is None
    )
    study.tell(running, state=TrialState.FAIL)
    # Each device has its own budget: a GPU budget does not stop CPU workers, nor the reverse.
    assert sweep_cost(study.get_trials(), BudgetConfig(gpu_hours=1e-9)).stop("cpu") is None
    assert sweep_cost(study.get_trials(), BudgetConfig(cpu_hours=1e-9)).stop("gpu") is None
    store.dispose()


def test_cost_to_reach_the_best_sums_what_had_finished_when_it_completed(tmp_path: Path) -> None:
    study, store, retries = _sweep(tmp_path)
    first = _start(study)
    study.tell(first, 0.5)
    _fail(study, retries, _start(study), "failed")
    best = _start(study, units=1)
    running = _start(study)  # still running when the best completes
    study.tell(best, 0.9)
    study.tell(running, 0.1)
    later = _start(study, device="gpu", units=1)
    study.tell(later, 0.7)
    trials = study.get_trials()
    cost = sweep_cost(trials, BudgetConfig(price_per_cpu_hour=3.0))
    assert study.best_trial.number == best.number
    reached = cost.to_best(study.best_trial)
    hours = (_device_s(trials[0], 2) + _device_s(trials[1], 2) + _device_s(trials[2], 1)) / 3600
    assert reached["trial"] == best.number
    assert reached["cpu_hours"] == pytest.approx(hours, rel=1e-12)
    assert reached["gpu_hours"] == 0.0
    assert reached["money"] == pytest.approx(3.0 * hours, rel=1e-12)
    # The later GPU attempt has no price: the sweep's money is unknown, not a partial sum.
    assert cost.to_best(trials[-1])["money"] is None
    store.dispose()


def test_a_killed_workers_attempt_keeps_its_compute(tmp_path: Path) -> None:
    """start_trial records what the attempt is counted in; the launcher finding its worker
    dead fails and re-queues it, and its compute is recorded and counted."""
    study, store, _ = _sweep(tmp_path)
    layout = Layout.at(tmp_path)
    options = WorkerOptions(name="c", layout=layout, db_url="unused", threads=3)
    trial = start_trial(study, store, options)
    seen = worker_compute(3)
    assert compute_of(_frozen(study, trial.number)) == seen
    assert seen == Compute("gpu", seen.units) or seen == Compute("cpu", 3)
    time.sleep(0.02)
    config = SweepConfig.model_validate({"name": "c", "data": {"train": "unused.csv"}})
    found = requeue_dead_workers(study, store, config, layout=layout, pids={os.getpid()})
    assert found == [(trial.number, True)]
    dead = _frozen(study, trial.number)
    record = store.trial("c", trial.number)
    assert record is not None and record.state == "FAIL" and record.reason == "interrupted"
    assert (record.device, record.device_seconds) == (seen.device, _device_s(dead, seen.units))
    cost = sweep_cost(study.get_trials(), BudgetConfig())
    assert cost.spent_hours(seen.device) == pytest.approx(record.device_seconds / 3600)
    store.dispose()


# --------------------------------------------------------------------------------------------
# A real sweep, stopped by its CPU-hours budget


def _config(tmp_path: Path, model: Path, data: Path, **search: Any) -> Path:
    """One-epoch trials of the tiny BERT, seconds each, no trackers."""
    config = {
        "name": "budget",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "max_length": 32},
        "train": {"method": "full", "epochs": 1, "batch_size": 16, "seed": 3},
        "search": {
            "sampler": "random",
            "pruner": "none",
            "space": {"train.learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}},
            **search,
        },
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    return write_config(tmp_path, config, name="budget")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    # CPU workers wherever the test runs: the budget under test is cpu_hours.
    return subprocess.run(
        [*TUNEFLEET, *args],
        capture_output=True,
        text=True,
        env=cli_env(CUDA_VISIBLE_DEVICES=""),
        timeout=600,
    )


@pytest.mark.slow
def test_a_cpu_hours_budget_stops_the_sweep_and_the_figures_add_up(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'budget.db'}"
    where = ("--out", str(out), "--db", db)
    # A trial, to measure what one costs here.
    config = _config(tmp_path, tiny_model, sentiment_csv, trials=1)
    first = _cli("sweep", str(config), *where, "--workers", "1")
    assert first.returncode == 0, first.stdout + first.stderr
    study = optuna.load_study(study_name="budget", storage=db)
    measured = sweep_cost(study.get_trials(), BudgetConfig())
    assert {c.device for c in measured.attempts.values()} == {"cpu"}
    spent, median = measured.spent_hours("cpu"), measured.median_trial_hours("cpu")
    assert median is not None

    # Resumed for 7 more trials with a budget (a resume may change it) that leaves half the
    # median trial's cost: it cannot be covered, so no trial starts. (Where the remaining
    # budget covers the median a trial starts, and may then cost more than the median: the
    # gate decides on the median, as tested above on real trials.)
    limit = spent + 0.5 * median
    budget = {"cpu_hours": limit, "price_per_cpu_hour": 2.5}
    config = _config(tmp_path, tiny_model, sentiment_csv, trials=8, budget=budget)
    swept = _cli("sweep", str(config), *where, "--workers", "1")
    output = swept.stdout + swept.stderr
    assert swept.returncode == 0, output
    stop = (
        f"budget: {spent:.3g} of {limit:.3g} cpu-hours spent; the median trial costs "
        f"{median:.3g}; no new trial"
    )
    assert stop in output
    assert f"the compute budget ended it ({stop})" in output
    assert len(study.get_trials()) == 1  # fewer than search.trials: the budget ended the sweep

    status = json.loads(_cli("status", "budget", *where, "--json").stdout)
    cpu = status["compute"]["cpu_hours"]
    per_trial = [t["compute"]["device_seconds"] for t in status["trials"]]
    assert cpu["spent"] == pytest.approx(sum(per_trial) / 3600, rel=1e-9)
    assert cpu["spent"] <= cpu["limit"] == limit
    assert cpu["remaining"] == pytest.approx(cpu["limit"] - cpu["spent"], rel=1e-9)
    assert cpu["money"] == pytest.approx(2.5 * cpu["spent"], rel=1e-9)
    assert status["compute"]["gpu_hours"]["spent"] == 0.0
    for trial in status["trials"]:
        assert trial["compute"]["money"] == pytest.approx(2.5 * trial["compute"]["device_hours"])
    # The store keeps each ended attempt's figure, the same as Optuna's datetimes give.
    store = Store(db)
    try:
        recorded = {r.number: r.device_seconds for r in store.trials("budget")}
    finally:
        store.dispose()
    assert recorded == {t["number"]: t["compute"]["device_seconds"] for t in status["trials"]}

    # The cost to reach the best: every attempt finished when the best completed, itself too.
    best = study.best_trial
    assert best.datetime_complete is not None
    reached = sum(
        t["compute"]["device_seconds"]
        for t, frozen in zip(status["trials"], study.get_trials(), strict=True)
        if frozen.datetime_complete is not None
        and frozen.datetime_complete <= best.datetime_complete
    )
    to_best = status["compute"]["to_best"]
    assert to_best["trial"] == best.number
    assert to_best["cpu_hours"] == pytest.approx(reached / 3600, rel=1e-9)
    assert to_best["money"] == pytest.approx(2.5 * reached / 3600, rel=1e-9)

    compare = _cli("compare", "budget", *where)
    assert compare.returncode == 0, compare.stderr
    shown = re.search(r"cpu-hours: (\S+) spent of (\S+), (\S+) left; cost (\S+)", compare.stdout)
    assert shown is not None, compare.stdout
    figures = (cpu["spent"], cpu["limit"], cpu["remaining"], cpu["money"])
    for text, value in zip(shown.groups(), figures, strict=True):  # rounded for display
        assert float(text) == pytest.approx(value, rel=1e-3, abs=1e-4)
    reach = re.search(
        rf"to reach the best \(trial {best.number}\): (\S+) cpu-hours; cost (\S+)", compare.stdout
    )
    assert reach is not None, compare.stdout
    assert float(reach.group(1)) == pytest.approx(to_best["cpu_hours"], rel=1e-3, abs=1e-4)
    assert float(reach.group(2)) == pytest.approx(to_best["money"], rel=1e-3, abs=1e-4)
    header = compare.stdout.splitlines()[0].split()
    assert header[5:7] == ["device-h", "cost"]


@pytest.mark.slow
def test_a_trial_that_would_run_past_the_budget_is_stopped_with_its_state_kept(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    """No trial has finished, so the gate lets the first start; a long one is stopped after its
    step once the budget is (about to be) spent, re-queued with its resumable state, and the
    sweep ends within the budget."""
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'budget.db'}"
    where = ("--out", str(out), "--db", db)
    limit = 12 / 3600  # 12 device-seconds: a few seconds of training at this worker's threads
    config = _config(
        tmp_path,
        tiny_model,
        sentiment_csv,
        trials=3,
        heartbeat_s=1,
        stale_after_s=60,
        budget={"cpu_hours": limit},
    )
    long = yaml.safe_load(config.read_text())
    long["train"]["epochs"] = 200  # far more than the budget pays for
    config.write_text(yaml.safe_dump(long))
    swept = _cli("sweep", str(config), *where, "--workers", "1")
    output = swept.stdout + swept.stderr
    assert swept.returncode == 0, output
    assert "stopping the running trial after its step" in output

    study = optuna.load_study(study_name="budget", storage=db)
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.WAITING], output  # re-queued, waiting
    store = Store(db)
    try:
        first = store.trial("budget", 0)
    finally:
        store.dispose()
    assert first is not None and first.requeued
    assert (first.reason, first.reason_detail) == ("interrupted", "compute budget spent")
    state = json.loads(
        (out / "resume" / "budget" / "trial-0" / "tunefleet-resume.json").read_text()
    )
    assert 0 < state["step"] < 200 * 7  # stopped mid-training, its state kept for a resume

    status = json.loads(_cli("status", "budget", *where, "--json").stdout)
    cpu = status["compute"]["cpu_hours"]
    assert cpu["spent"] <= cpu["limit"] == limit
    assert cpu["spent"] == pytest.approx(
        sum(t["compute"]["device_seconds"] for t in status["trials"] if t["compute"]) / 3600,
        rel=1e-9,
    )
