"""Trials that survive their workers, against real storages and real processes.

The taxonomy (``platform.retries``) on a real Optuna study and store; then real sweeps whose
worker is killed with SIGKILL, stopped with SIGSTOP (a heartbeat that stops while the process
lives) or sent SIGTERM: the trial is retried with the same params from its resumable state.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from support.cli import TUNEFLEET, cli_env, run_cli
from support.configs import write_config
from support.faults.inject import fault_env
from support.postgres import fresh_database
from support.waiting import wait_for
from support.wandb_offline import history, offline_runs, run_info
from tunefleet.platform.layout import Layout
from tunefleet.platform.retries import Retries, attempt_of, failure_stop, halved_batch
from tunefleet.platform.store import Store, TrialRecord
from tunefleet.search.liveness import fail_trial
from tunefleet.search.study import PRIMARY_SUFFIX
from tunefleet.trainers.resume import has_resumable, resumable_step

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


def test_a_dead_multi_objective_trials_twin_is_failed_with_it(db_url: str, tmp_path: Path) -> None:
    """The twin in ``NAME#primary`` (pruning on the first objective) ends with its trial: a
    dead worker never tells it, and a RUNNING twin would compete at the pruner's rungs."""
    store = Store(db_url)
    store.create_sweep("m", config={}, budget=3)
    study = optuna.create_study(study_name="m", storage=db_url, directions=["maximize", "minimize"])
    primary = optuna.create_study(study_name="m" + PRIMARY_SUFFIX, storage=db_url)
    retries = Retries(store, "m", max_retries=1, layout=Layout.at(tmp_path))
    assert store.claim_slot("m")
    trial, twin = study.ask(), primary.ask()
    trial.set_user_attr("twin", twin.number)
    twin.report(0.5, step=4)
    assert fail_trial(study, trial.number)  # as the launcher does on a dead worker's pid
    [dead] = study.get_trials(deepcopy=False)
    assert retries.end(study, dead, reason="interrupted", detail="worker died")
    [ended] = primary.get_trials(deepcopy=False)
    assert ended.state == TrialState.FAIL
    [_, retry] = study.get_trials(deepcopy=False)
    assert "twin" not in retry.user_attrs  # the retry asks for a twin of its own
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


# --------------------------------------------------------------------------------------------
# Real sweeps, real signals


def sweep_config(
    tmp_path: Path, model: Path, data: Path, name: str, *, tracked: bool = False, **search: object
) -> Path:
    """One trial of several evaluations, a few seconds long on the tiny BERT; ``tracked``: with
    MLflow (sqlite) and W&B (offline)."""
    config = {
        "name": name,
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "max_length": 32},
        "train": {
            "method": "full",
            "epochs": 5,
            "batch_size": 16,
            "seed": 3,
            "logging_steps": 1,
        },
        "search": {
            "trials": 1,
            "sampler": "random",
            "pruner": "none",
            "space": {"train.learning_rate": {"low": 1e-4, "high": 1e-3, "log": True}},
            **search,
        },
        "tracking": {"mlflow": {"enabled": tracked}, "wandb": {"enabled": tracked}},
    }
    return write_config(tmp_path, config, name=name)


@dataclass(frozen=True)
class Swept:
    db: str
    out: Path
    name: str
    output: str
    code: int

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.db)

    def records(self) -> dict[int, TrialRecord]:
        store = Store(self.db)
        try:
            return {r.number: r for r in store.trials(self.name)}
        finally:
            store.dispose()


def start_sweep(
    config: Path, out: Path, db: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*TUNEFLEET, "sweep", str(config), "--out", str(out), "--db", db, "--workers", "1"],
        env=cli_env(**(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def worker_after_first_evaluation(out: Path, db: str, name: str, *, past: bool = False) -> int:
    """The pid of the worker running trial 0, once it has written its first resumable state;
    ``past``: and its trackers have steps after that state (which its retry will redo)."""
    resume = Layout.at(out).resume_dir(name, 0)
    wait_for(lambda: has_resumable(resume), timeout_s=300, what="the first resumable state")
    store = Store(db)
    try:
        if past:
            wait_for(
                lambda: _live_step(store, name) > (resumable_step(resume) or 0),
                timeout_s=300,
                what="steps delivered after the first resumable state",
            )
        record = store.trial(name, 0)
    finally:
        store.dispose()
    assert record is not None and record.pid is not None
    return record.pid


def _live_step(store: Store, name: str) -> int:
    record = store.trial(name, 0)
    return int((record.live or {}).get("step", 0)) if record else 0


def finish(proc: subprocess.Popen[str], out: Path, db: str, name: str) -> Swept:
    try:
        output, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return Swept(db, out, name, output, proc.returncode)


@pytest.fixture(scope="module")
def uninterrupted(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, sentiment_csv: Path
) -> TrialRecord:
    """Trial 0 of the same sweep, never interrupted: what every resumed retry must equal."""
    tmp = tmp_path_factory.mktemp("uninterrupted")
    out, db = tmp / "runs", f"sqlite:///{tmp / 'ref.db'}"
    proc = start_sweep(sweep_config(tmp, tiny_model, sentiment_csv, "survive"), out, db)
    swept = finish(proc, out, db, "survive")
    assert swept.code == 0, swept.output
    return swept.records()[0]


def assert_resumed_like_uninterrupted(swept: Swept, reason: str, reference: TrialRecord) -> None:
    """Trial 0 ended with ``reason`` and was re-queued; trial 1 retried it with the same params,
    from its resumable state, to the same result as the uninterrupted run; budget exact."""
    assert swept.code == 0, swept.output
    trials = {t.number: t for t in swept.study().get_trials(deepcopy=False)}
    assert {n: t.state for n, t in trials.items()} == {0: TrialState.FAIL, 1: TrialState.COMPLETE}
    records = swept.records()
    dead, retry = records[0], records[1]
    assert (dead.state, dead.reason, dead.requeued) == ("FAIL", reason, True)
    assert (retry.state, retry.attempt, retry.retry_of) == ("COMPLETE", 2, 0)
    assert trials[1].user_attrs["retry_of"] == 0 and trials[1].user_attrs["attempt"] == 2
    assert trials[1].params == trials[0].params
    assert trials[1].user_attrs["resumed_from_step"] > 0  # not from step 0
    assert retry.params == reference.params
    assert retry.metrics["eval_accuracy"] == reference.metrics["eval_accuracy"]
    assert retry.metrics["eval_loss"] == pytest.approx(reference.metrics["eval_loss"], abs=1e-5)
    assert retry.value == reference.value
    # The logical trial has ended: nothing is left to resume from.
    assert not Layout.at(swept.out).resume_dir(swept.name, 0).exists()
    store = Store(swept.db)
    try:
        assert store.get_sweep(swept.name).claimed == 1
    finally:
        store.dispose()


def assert_one_run_each_step_once(swept: Swept) -> None:
    """The retry continued the dead attempt's MLflow child run and W&B run: one run of each for
    the logical trial, FINISHED, every metric's steps each once and running to the end."""
    from mlflow.tracking import MlflowClient

    records = swept.records()
    assert records[0].mlflow_run_id == records[1].mlflow_run_id is not None
    assert records[0].wandb_run_id == records[1].wandb_run_id is not None
    client = MlflowClient(tracking_uri=f"sqlite:///{swept.out / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(swept.name)
    assert experiment is not None
    runs = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`tunefleet.role` = 'trial'"
    )
    assert [r.info.run_id for r in runs] == [records[0].mlflow_run_id]
    [run] = runs
    assert run.info.status == "FINISHED" and run.data.tags["tunefleet.attempt"] == "2"
    evaluations = sorted(h["step"] for h in records[1].history if "eval_accuracy" in h)
    assert len(evaluations) == 5  # one per epoch, the dead attempt's included
    for key in ("loss", "eval_accuracy", "learning_rate"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, sorted(steps))
    eval_steps = [m.step for m in client.get_metric_history(run.info.run_id, "eval_accuracy")]
    assert sorted(eval_steps) == evaluations
    # W&B: every offline folder of the sweep (the dead attempt's, the replay's, the retry's)
    # belongs to one run id, and no key holds a step twice across them.
    # (A killed attempt's folder may hold no run record yet: its id is in its file name.)
    paths = offline_runs(swept.out / "wandb")
    assert {path.stem.removeprefix("run-") for path in paths} == {records[0].wandb_run_id}
    assert run_info(paths[-1])["name"] == "trial-0"
    seen: dict[str, list[int]] = {}
    for path in paths:
        for key, points in history(path).items():
            seen.setdefault(key, []).extend(step for step, _ in points)
    assert seen["loss"] and seen["eval_accuracy"]
    for key in ("loss", "eval_accuracy"):
        assert len(seen[key]) == len(set(seen[key])), (key, sorted(seen[key]))


@pytest.mark.slow
def test_kill_9_of_a_worker_mid_trial_retries_it_resumed(
    db_url: str, tmp_path: Path, tiny_model: Path, sentiment_csv: Path, uninterrupted: TrialRecord
) -> None:
    out = tmp_path / "runs"
    config = sweep_config(tmp_path, tiny_model, sentiment_csv, "survive", tracked=True)
    proc = start_sweep(config, out, db_url)
    try:
        os.kill(worker_after_first_evaluation(out, db_url, "survive", past=True), signal.SIGKILL)
    finally:
        swept = finish(proc, out, db_url, "survive")
    assert "trial 0: its worker died; re-queued" in swept.output
    assert_resumed_like_uninterrupted(swept, "interrupted", uninterrupted)
    # The retry redid steps its dead attempt had logged, and logged none of them again.
    retry = swept.study().trials[1].user_attrs
    assert retry["tracking"]["logged_through"] > retry["resumed_from_step"]
    assert_one_run_each_step_once(swept)


@pytest.mark.slow
def test_sigterm_saves_requeues_and_exits_0(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, uninterrupted: TrialRecord
) -> None:
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'term.db'}"
    config = sweep_config(tmp_path, tiny_model, sentiment_csv, "survive", tracked=True)
    proc = start_sweep(config, out, db)
    try:
        pid = worker_after_first_evaluation(out, db, "survive", past=True)
        status = run_cli("status", "survive", "--out", str(out), "--db", db, "--json")
        os.kill(pid, signal.SIGTERM)
    finally:
        swept = finish(proc, out, db, "survive")
    assert f"worker {pid} exited (0)" in swept.output
    assert_resumed_like_uninterrupted(swept, "interrupted", uninterrupted)
    assert_one_run_each_step_once(swept)
    # Seen while it ran: where, how far of how many steps, and when it would end.
    shown = json.loads(status.stdout)
    progress = shown["trials"][0]["progress"]
    assert (progress["host"], progress["worker"], progress["total"]) == (
        socket.gethostname(),
        "0",
        40,  # 5 epochs of 8 steps
    )
    assert 0 < progress["step"] < 40 and progress["eta_s"] >= 0
    assert shown["eta_s"] >= progress["eta_s"]
    # The sweep's own progress line names the running trial (the retry by its attempt).
    assert re.search(r"running 1 .*\| trial 0 · ", swept.output), swept.output
    assert re.search(r"running 1 .*\| trial 1 \(attempt 2\) · ", swept.output), swept.output


@pytest.mark.slow
def test_a_heartbeat_that_stops_while_the_worker_lives_is_found_on_the_clock(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, uninterrupted: TrialRecord
) -> None:
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'stale.db'}"
    config = sweep_config(
        tmp_path, tiny_model, sentiment_csv, "survive", heartbeat_s=1, stale_after_s=3
    )
    proc = start_sweep(config, out, db)
    try:
        pid = worker_after_first_evaluation(out, db, "survive")
        os.kill(pid, signal.SIGSTOP)  # alive, silent; and nobody asks for a trial meanwhile
        try:
            wait_for(
                lambda: Swept(db, out, "survive", "", 0).records()[0].reason == "stale",
                timeout_s=120,
                what="the launcher's clock to find the stopped worker's trial stale",
            )
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        swept = finish(proc, out, db, "survive")
    # The worker, woken, finds its trial taken over, and then runs the retry itself.
    assert "trial 0 was re-queued while this worker was silent" in swept.output, swept.output
    assert_resumed_like_uninterrupted(swept, "stale", uninterrupted)


@pytest.mark.slow
def test_max_retries_0_fails_a_killed_workers_trial_for_good(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'once.db'}"
    config = sweep_config(tmp_path, tiny_model, sentiment_csv, "once", max_retries=0)
    proc = start_sweep(config, out, db)
    try:
        os.kill(worker_after_first_evaluation(out, db, "once"), signal.SIGKILL)
    finally:
        swept = finish(proc, out, db, "once")
    assert swept.code == 1, swept.output  # no trial completed
    [record] = swept.records().values()
    assert (record.state, record.reason, record.requeued) == ("FAIL", "interrupted", False)
    assert "search.max_retries" in (record.reason_detail or "")
    assert [t.state for t in swept.study().get_trials()] == [TrialState.FAIL]
    assert not Layout.at(out).resume_dir("once", 0).exists()


@pytest.mark.slow
def test_a_non_finite_loss_is_never_retried_and_max_failures_stops_the_sweep(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'nan.db'}"
    config = sweep_config(tmp_path, tiny_model, sentiment_csv, "nan", trials=4, max_failures=2)
    swept = finish(start_sweep(config, out, db, fault_env("nan")), out, db, "nan")
    assert swept.code == 1, swept.output
    assert "2 trials failed (search.max_failures: 2); most frequent reason: non_finite" in (
        swept.output
    )
    records = swept.records()
    assert [(r.state, r.reason, r.requeued, r.retry_of) for r in records.values()] == [
        ("FAIL", "non_finite", False, None)
    ] * 2
    assert records[0].reason_detail == "step 3: loss"
    states = [t.state for t in swept.study().get_trials()]
    assert states == [TrialState.FAIL] * 2  # no retry queued, and no third trial
    status = run_cli("status", "nan", "--out", str(out), "--db", db)
    assert "non_finite: step 3: loss" in status.stdout, status.stdout


@pytest.mark.slow
def test_out_of_memory_with_halve_batch_is_retried_once_with_the_same_effective_batch(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    out, db = tmp_path / "runs", f"sqlite:///{tmp_path / 'oom.db'}"
    config = sweep_config(tmp_path, tiny_model, sentiment_csv, "oom")
    data = yaml.safe_load(config.read_text())
    data["train"].update(on_oom="halve_batch", epochs=1)
    config.write_text(yaml.safe_dump(data))
    swept = finish(start_sweep(config, out, db, fault_env("oom:8")), out, db, "oom")
    assert swept.code == 0, swept.output
    records = swept.records()
    assert (records[0].reason, records[0].requeued) == ("oom", True)
    assert records[0].reason_detail == "batch_size 16, gradient_accumulation_steps 1"
    assert (records[1].state, records[1].attempt, records[1].retry_of) == ("COMPLETE", 2, 0)
    retry = swept.study().trials[1]
    assert retry.user_attrs["overrides"] == {
        "train.batch_size": 8,
        "train.gradient_accumulation_steps": 2,
    }
    assert retry.params == swept.study().trials[0].params
    status = run_cli("status", "oom", "--out", str(out), "--db", db)
    assert "2 of 0" in status.stdout and "oom: batch_size 16" in status.stdout, status.stdout
