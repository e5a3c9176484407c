"""The worker loop: claim a slot of the budget, then ask -> train -> finish one trial, until the
budget or the deadline is spent. One worker per GPU (or per share of CPU threads).

Each step of a trial has one place to change: ask (``start_trial`` asks Optuna and records who
runs the trial; ``prepare`` draws its params, applies them and starts its telemetry), ``train``
(the training path, and where its checkpoint goes) and ``finish`` (tell Optuna, record the store,
close the telemetry).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from tunefleet.config import SweepConfig, apply_params, with_secrets
from tunefleet.errors import TunefleetError
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.quiet import quiet_libraries
from tunefleet.platform.run_tracking import RunTracking, start_trial_tracking
from tunefleet.platform.store import Store
from tunefleet.platform.sync import replay_in_background
from tunefleet.redaction import install_log_redaction, redact_text, secret_values, url_passwords
from tunefleet.search.liveness import heartbeat
from tunefleet.search.space import suggest_params
from tunefleet.search.study import make_storage, open_study, pruning_report

if TYPE_CHECKING:
    from tunefleet.trainers.run import TrialOutcome

log = logging.getLogger(__name__)

INTERRUPTED_WAIT_S = 2.0
"""How long a Ctrl-C'd trial waits for its trackers; the rest stays in the spool."""
MAX_CONSECUTIVE_FAILURES = 3
"""A worker whose trials keep crashing stops rather than burning the budget on the same bug."""


@dataclass(frozen=True)
class WorkerOptions:
    name: str
    layout: Layout
    db_url: str
    index: int = 0
    threads: int | None = None
    deadline: float | None = None
    """Wall-clock time (``time.time()``) after which no new trial starts."""
    secrets: Mapping[str, Any] = field(default_factory=dict)
    """Dotted path -> real value of the secrets the stored config holds redacted."""


@dataclass(frozen=True)
class _Sweep:
    """What every trial of this worker shares."""

    options: WorkerOptions
    config: SweepConfig
    study: optuna.Study
    store: Store
    experiment_id: str | None
    parent_run_id: str | None

    @property
    def name(self) -> str:
        return self.options.name


@dataclass(frozen=True)
class _Trial:
    """An asked trial with its params drawn and its telemetry started."""

    trial: optuna.Trial
    params: dict[str, Any]
    config: SweepConfig
    """The sweep's config with this trial's params applied."""
    tracking: RunTracking

    @property
    def number(self) -> int:
        return self.trial.number


def run_worker(options: WorkerOptions) -> int:
    """Run trials until the sweep's budget or deadline is spent; returns how many this ran."""
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    quiet_libraries()
    sweep = _open_sweep(options)
    replay = replay_in_background(
        options.layout,
        name=options.name,
        known_uris={mlflow_tracking_uri(options.layout, sweep.config)},
        store=sweep.store,
    )
    ran = failures = 0
    while failures < MAX_CONSECUTIVE_FAILURES:
        if options.deadline is not None and time.time() >= options.deadline:
            break
        if not sweep.store.claim_slot(options.name):
            break
        trial = start_trial(sweep.study, sweep.store, options)
        with heartbeat(sweep.study, trial):
            ok = run_one(sweep, trial)
        ran += 1
        failures = 0 if ok else failures + 1
    # A worker that found no slot left still finishes its replay, within the trackers' wait.
    replay.join(sweep.config.tracking.sink_wait_s)
    sweep.store.dispose()
    return ran


def _open_sweep(options: WorkerOptions) -> _Sweep:
    store = Store(options.db_url)
    record = store.get_sweep(options.name)
    config = with_secrets(SweepConfig.model_validate(record.config), options.secrets)
    install_log_redaction(secret_values(config) | url_passwords(options.db_url))
    study = open_study(config, storage=make_storage(options.db_url), worker=options.index)
    return _Sweep(
        options,
        config,
        study,
        store,
        experiment_id=record.mlflow_experiment_id,
        parent_run_id=record.mlflow_parent_run_id,
    )


def start_trial(study: optuna.Study, store: Store, options: WorkerOptions) -> optuna.Trial:
    """Ask for a trial and record who runs it first, so that a resumed sweep can tell a dead
    worker's trial from a live one at once (heartbeats cover the short window before this)."""
    trial = study.ask()
    host, pid = socket.gethostname(), os.getpid()
    trial.set_user_attr("host", host)
    trial.set_user_attr("pid", pid)
    store.upsert_trial(options.name, trial.number, state="RUNNING", host=host, pid=pid)
    return trial


def run_one(sweep: _Sweep, trial: optuna.Trial) -> bool:
    """One started trial: prepare -> train -> finish; False if it failed (its slot goes back)."""
    asked = prepare(sweep, trial)
    if isinstance(asked, str):
        return _fail(sweep, trial, asked, {})
    try:
        outcome = train(sweep, asked)
    except KeyboardInterrupt:
        _end_tracking(sweep, asked, "FAILED", interrupted=True)
        sweep.study.tell(trial, state=TrialState.FAIL)
        raise
    except Exception as exc:
        _end_tracking(sweep, asked, "FAILED")
        if not isinstance(exc, TunefleetError):  # a user's mistake needs its message, not a trace
            log.exception("trial %d failed", trial.number)
        return _fail(sweep, trial, f"{type(exc).__name__}: {exc}", asked.params)
    return finish(sweep, asked, outcome)


def prepare(sweep: _Sweep, trial: optuna.Trial) -> _Trial | str:
    """Draw the trial's params, apply them to the config and start its telemetry; or why the
    params do not form a valid config."""
    try:
        params = suggest_params(trial, sweep.config)
        config = apply_params(sweep.config, params)
    except (ValidationError, ValueError) as exc:
        return f"params do not form a valid config: {exc}"
    tracking = start_trial_tracking(
        config,
        sweep.options.layout,
        trial=trial.number,
        experiment_id=sweep.experiment_id,
        parent_run_id=sweep.parent_run_id,
        worker=sweep.options.index,
        db_url=sweep.options.db_url,
        store=sweep.store,
    )
    # Host and pid are recorded by start_trial already.
    wandb_run_id = tracking.run_ids().get("wandb")
    if wandb_run_id is not None:
        trial.set_user_attr("wandb_run_id", wandb_run_id)
    sweep.store.upsert_trial(
        sweep.name,
        trial.number,
        state="RUNNING",
        params=params,
        wandb_run_id=wandb_run_id,
    )
    return _Trial(trial, params, config, tracking)


def train(sweep: _Sweep, asked: _Trial) -> TrialOutcome:
    """Train the trial, each evaluation reported to the pruner; a pruned trial comes back with
    ``pruned`` set and its checkpoint removed (a pruned trial is never promoted: ray#9865)."""
    from tunefleet.trainers.run import TrialPruned, TrialRequest, run_trial

    layout = sweep.options.layout
    request = TrialRequest(
        sweep=sweep.name,
        number=asked.number,
        params=asked.params,
        checkpoint_dir=layout.checkpoint(sweep.name, asked.number),
        work_dir=layout.work_dir(sweep.name, asked.number),
        cache_dir=layout.token_cache,
        report=pruning_report(asked.trial),
        callbacks=[asked.tracking.callback],
    )
    try:
        return run_trial(asked.config, request)
    except TrialPruned as pruned:
        shutil.rmtree(request.checkpoint_dir, ignore_errors=True)
        return pruned.outcome
    finally:
        shutil.rmtree(request.work_dir, ignore_errors=True)


def finish(sweep: _Sweep, asked: _Trial, outcome: TrialOutcome) -> bool:
    """Tell Optuna, record the trial and close its telemetry: pruned, complete, or failed when
    no evaluation produced the metric."""
    if not outcome.pruned and outcome.value is None:
        _end_tracking(sweep, asked, "FAILED")
        return _fail(sweep, asked.trial, "no evaluation produced the metric", asked.params)
    if outcome.pruned:
        sweep.study.tell(asked.trial, state=TrialState.PRUNED)
    else:
        sweep.study.tell(asked.trial, outcome.value)
    complete = not outcome.pruned
    sweep.store.upsert_trial(
        sweep.name,
        asked.number,
        state="COMPLETE" if complete else "PRUNED",
        value=outcome.value,
        metrics=outcome.metrics,
        history=outcome.history,
        seconds=outcome.seconds,
        checkpoint=str(outcome.checkpoint) if complete and outcome.checkpoint else None,
        checkpoint_sha256=outcome.checkpoint_sha256 if complete else None,
    )
    if complete and _update_best(sweep) == asked.number:
        count = len(sweep.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        asked.tracking.report_best(
            trial=asked.number,
            value=float(outcome.value or 0.0),
            params=asked.params,
            complete=count,
        )
    _end_tracking(sweep, asked, "FINISHED" if complete else "KILLED")
    return True


def _fail(sweep: _Sweep, trial: optuna.Trial, why: str, params: dict[str, Any]) -> bool:
    why = redact_text(why)  # an exception's text may quote a URL or a token
    trial.set_user_attr("fail_reason", why[:2000])
    sweep.study.tell(trial, state=TrialState.FAIL)
    sweep.store.upsert_trial(
        sweep.name,
        trial.number,
        state="FAIL",
        params=params,
        metrics={},
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    sweep.store.release_slot(sweep.name)
    print(f"trial {trial.number} failed: {why}", flush=True)
    return False


def _update_best(sweep: _Sweep) -> int:
    """Records the sweep's best trial; returns its number."""
    best = sweep.study.best_trial
    record = sweep.store.trial(sweep.name, best.number)
    sweep.store.set_best(
        sweep.name,
        number=best.number,
        value=float(best.value or 0.0),
        params=best.params,
        checkpoint=record.checkpoint if record else None,
    )
    return best.number


def _end_tracking(sweep: _Sweep, asked: _Trial, status: str, *, interrupted: bool = False) -> None:
    """Close the trial's telemetry (a bounded wait; a short one for a user's Ctrl-C, since the
    spool keeps the rest) and record the MLflow run id, which the bus thread created: it exists
    by now unless MLflow was down (then `tunefleet sync` records it)."""
    asked.tracking.close(status, timeout_s=INTERRUPTED_WAIT_S if interrupted else None)
    # Not an Optuna user attr: the trial is told by now, and Optuna refuses changes after that.
    mlflow_run_id = asked.tracking.run_ids().get("mlflow")
    if mlflow_run_id:
        sweep.store.upsert_trial(sweep.name, asked.number, mlflow_run_id=mlflow_run_id)


def worker_main(options: WorkerOptions) -> int:
    """The ``tunefleet worker`` entry: exit code 0 unless the sweep cannot be opened."""
    try:
        ran = run_worker(options)
    except TunefleetError as exc:
        print(f"error: {redact_text(str(exc))}", flush=True)
        return 2
    print(f"worker {options.index} ({os.getpid()}) ran {ran} trial(s)", flush=True)
    return 0
