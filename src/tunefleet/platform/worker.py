"""The worker loop: claim a slot of the budget, ask, train, tell, record; until the budget or
the deadline is spent. One worker per GPU (or per share of CPU threads)."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import TrialState
from pydantic import ValidationError

from tunefleet.config import SweepConfig, apply_params, with_secrets
from tunefleet.errors import TunefleetError
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.run_tracking import RunTracking, start_trial_tracking
from tunefleet.platform.store import Store
from tunefleet.platform.sync import replay_in_background
from tunefleet.redaction import install_log_redaction, redact_text, secret_values, url_passwords
from tunefleet.search.space import suggest_params
from tunefleet.search.study import HEARTBEAT_SECONDS, make_storage, open_study

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


def quiet_libraries() -> None:
    """Keep a worker's output to its own progress: library notices about APIs we chose
    deliberately (heartbeats with ask/tell, experimental sampler options) are noise to a user."""
    import transformers

    transformers.utils.logging.set_verbosity_error()  # type: ignore[no-untyped-call]
    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message=".*Heartbeat of storage.*")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


class Heartbeat:
    """Beats for a trial while it runs: ask/tell gets none from Optuna (only ``optimize`` beats),
    and a trial without beats is never recognised as stale when its worker dies."""

    def __init__(self, storage: BaseStorage, trial_id: int) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(storage, trial_id), daemon=True, name="tunefleet-heartbeat"
        )
        self._thread.start()

    def _run(self, storage: BaseStorage, trial_id: int) -> None:
        assert isinstance(storage, BaseHeartbeat)
        while True:
            try:
                storage.record_heartbeat(trial_id)
            except Exception:
                log.warning("heartbeat failed", exc_info=True)
            if self._stop.wait(HEARTBEAT_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


def run_worker(options: WorkerOptions) -> int:
    """Run trials until the sweep's budget or deadline is spent; returns how many this ran."""
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    quiet_libraries()
    store = Store(options.db_url)
    sweep = store.get_sweep(options.name)
    config = with_secrets(SweepConfig.model_validate(sweep.config), options.secrets)
    install_log_redaction(secret_values(config) | url_passwords(options.db_url))
    study = open_study(config, storage=make_storage(options.db_url), worker=options.index)
    replay = replay_in_background(
        options.layout,
        name=options.name,
        known_uris={mlflow_tracking_uri(options.layout, config)},
        store=store,
    )
    ran = failures = 0
    while failures < MAX_CONSECUTIVE_FAILURES:
        if options.deadline is not None and time.time() >= options.deadline:
            break
        if not store.claim_slot(options.name):
            break
        trial = start_trial(study, store, options)
        beat = Heartbeat(study._storage, trial._trial_id)
        try:
            ok = run_one(
                study,
                trial,
                config,
                store,
                options,
                experiment_id=sweep.mlflow_experiment_id,
                parent_run_id=sweep.mlflow_parent_run_id,
            )
        finally:
            beat.stop()
        ran += 1
        failures = 0 if ok else failures + 1
    # A worker that found no slot left still finishes its replay, within the trackers' wait.
    replay.join(config.tracking.sink_wait_s)
    store.dispose()
    return ran


def start_trial(study: optuna.Study, store: Store, options: WorkerOptions) -> optuna.Trial:
    """Ask for a trial and record who runs it first, so that a resumed sweep can tell a dead
    worker's trial from a live one at once (heartbeats cover the short window before this)."""
    trial = study.ask()
    host, pid = socket.gethostname(), os.getpid()
    trial.set_user_attr("host", host)
    trial.set_user_attr("pid", pid)
    store.upsert_trial(options.name, trial.number, state="RUNNING", host=host, pid=pid)
    return trial


def run_one(
    study: optuna.Study,
    trial: optuna.Trial,
    config: SweepConfig,
    store: Store,
    options: WorkerOptions,
    *,
    experiment_id: str | None,
    parent_run_id: str | None,
) -> bool:
    """One asked trial from suggest to tell; False if it failed (its slot goes back)."""
    from tunefleet.trainers.run import TrialPruned, TrialRequest, run_trial

    name, number, layout = options.name, trial.number, options.layout
    try:
        params = suggest_params(trial, config)
        trial_config = apply_params(config, params)
    except (ValidationError, ValueError) as exc:
        return _fail(study, store, trial, options, f"params do not form a valid config: {exc}", {})
    tracking = start_trial_tracking(
        trial_config,
        layout,
        trial=number,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        worker=options.index,
        db_url=options.db_url,
        store=store,
    )
    _record_start(store, trial, options, params, tracking)

    def report(epoch: int, value: float) -> bool:
        trial.report(value, epoch)
        return trial.should_prune()

    request = TrialRequest(
        sweep=name,
        number=number,
        params=params,
        checkpoint_dir=layout.checkpoint(name, number),
        work_dir=layout.work_dir(name, number),
        cache_dir=layout.token_cache,
        report=report,
        callbacks=[tracking.callback],
    )
    try:
        outcome = run_trial(trial_config, request)
        state = TrialState.COMPLETE
    except TrialPruned as pruned:
        outcome, state = pruned.outcome, TrialState.PRUNED
    except (Exception, KeyboardInterrupt) as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        _end_tracking(store, trial, options, tracking, "FAILED", interrupted=interrupted)
        if interrupted:
            study.tell(trial, state=TrialState.FAIL)
            raise
        if not isinstance(exc, TunefleetError):  # a user's mistake needs its message, not a trace
            log.exception("trial %d failed", number)
        return _fail(study, store, trial, options, f"{type(exc).__name__}: {exc}", params)
    finally:
        shutil.rmtree(request.work_dir, ignore_errors=True)
    if state == TrialState.COMPLETE and outcome.value is None:
        _end_tracking(store, trial, options, tracking, "FAILED")
        return _fail(study, store, trial, options, "no evaluation produced the metric", params)
    if state == TrialState.PRUNED:
        # A pruned trial is never promoted; its checkpoint is only disk (ray#9865).
        shutil.rmtree(request.checkpoint_dir, ignore_errors=True)
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, outcome.value)
    store.upsert_trial(
        name,
        number,
        state=state.name,
        value=outcome.value,
        metrics=outcome.metrics,
        history=outcome.history,
        seconds=outcome.seconds,
        checkpoint=str(outcome.checkpoint)
        if state == TrialState.COMPLETE and outcome.checkpoint
        else None,
        checkpoint_sha256=outcome.checkpoint_sha256 if state == TrialState.COMPLETE else None,
    )
    if state == TrialState.COMPLETE and _update_best(study, store, options.name) == number:
        complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        tracking.report_best(
            trial=number, value=float(outcome.value or 0.0), params=params, complete=complete
        )
    _end_tracking(
        store, trial, options, tracking, "FINISHED" if state == TrialState.COMPLETE else "KILLED"
    )
    return True


def _record_start(
    store: Store,
    trial: optuna.Trial,
    options: WorkerOptions,
    params: dict[str, Any],
    tracking: RunTracking,
) -> None:
    # Host and pid are recorded by start_trial already.
    wandb_run_id = tracking.run_ids().get("wandb")
    if wandb_run_id is not None:
        trial.set_user_attr("wandb_run_id", wandb_run_id)
    store.upsert_trial(
        options.name,
        trial.number,
        state="RUNNING",
        params=params,
        wandb_run_id=wandb_run_id,
    )


def _fail(
    study: optuna.Study,
    store: Store,
    trial: optuna.Trial,
    options: WorkerOptions,
    why: str,
    params: dict[str, Any],
) -> bool:
    why = redact_text(why)  # an exception's text may quote a URL or a token
    trial.set_user_attr("fail_reason", why[:2000])
    study.tell(trial, state=TrialState.FAIL)
    store.upsert_trial(
        options.name,
        trial.number,
        state="FAIL",
        params=params,
        metrics={},
        host=socket.gethostname(),
        pid=os.getpid(),
    )
    store.release_slot(options.name)
    print(f"trial {trial.number} failed: {why}", flush=True)
    return False


def _update_best(study: optuna.Study, store: Store, name: str) -> int:
    """Records the sweep's best trial; returns its number."""
    best = study.best_trial
    record = store.trial(name, best.number)
    store.set_best(
        name,
        number=best.number,
        value=float(best.value or 0.0),
        params=best.params,
        checkpoint=record.checkpoint if record else None,
    )
    return best.number


def _end_tracking(
    store: Store,
    trial: optuna.Trial,
    options: WorkerOptions,
    tracking: RunTracking,
    status: str,
    *,
    interrupted: bool = False,
) -> None:
    """Close the trial's telemetry (a bounded wait; a short one for a user's Ctrl-C, since the
    spool keeps the rest) and record the MLflow run id, which the bus thread created: it exists
    by now unless MLflow was down (then `tunefleet sync` records it)."""
    tracking.close(status, timeout_s=INTERRUPTED_WAIT_S if interrupted else None)
    # Not an Optuna user attr: the trial is told by now, and Optuna refuses changes after that.
    mlflow_run_id = tracking.run_ids().get("mlflow")
    if mlflow_run_id:
        store.upsert_trial(options.name, trial.number, mlflow_run_id=mlflow_run_id)


def worker_main(options: WorkerOptions) -> int:
    """The ``tunefleet worker`` entry: exit code 0 unless the sweep cannot be opened."""
    try:
        ran = run_worker(options)
    except TunefleetError as exc:
        print(f"error: {redact_text(str(exc))}", flush=True)
        return 2
    print(f"worker {options.index} ({os.getpid()}) ran {ran} trial(s)", flush=True)
    return 0
