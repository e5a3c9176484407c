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
import signal
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from optuna.trial import TrialState
from pydantic import ValidationError

from tunefleet.config import SweepConfig, apply_params, with_secrets
from tunefleet.errors import TunefleetError
from tunefleet.platform.cost import (
    COMPUTE_ATTR,
    BudgetWatch,
    Device,
    budget_stop,
    look_s,
    record_cost,
    worker_compute,
)
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.quiet import quiet_libraries
from tunefleet.platform.retries import (
    RETRIED_REASONS,
    Attempt,
    Retries,
    attempt_of,
    failure_stop,
    halved_batch,
    last_line,
)
from tunefleet.platform.run_tracking import (
    Attempted,
    RunTracking,
    run_identity,
    start_trial_tracking,
)
from tunefleet.platform.store import Store
from tunefleet.platform.sync import hand_over, replay_in_background
from tunefleet.redaction import install_log_redaction, redact_text, secret_values, url_passwords
from tunefleet.search.liveness import StaleClock, frozen_trial, heartbeat, taken_over
from tunefleet.search.objectives import Judged, MissingMetric, judge
from tunefleet.search.space import suggest_params
from tunefleet.search.study import make_storage, open_study, primary_study, pruning_report
from tunefleet.search.warm_start import best_own, own_trials

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
    retries: Retries
    shutdown: _Shutdown
    primary: optuna.Study | None = None
    """A multi-objective sweep's primary study, whose twins are pruned on its first objective
    (``search.study.primary_study``); None for a single-objective sweep."""

    @property
    def name(self) -> str:
        return self.options.name


@dataclass(frozen=True)
class _Trial:
    """An asked trial with its params drawn and its telemetry started."""

    trial: optuna.Trial
    params: dict[str, Any]
    config: SweepConfig
    """The sweep's config with this trial's params (and a retry's overrides) applied."""
    tracking: RunTracking
    attempt: Attempt
    twin: optuna.Trial | None = None
    """Its twin in the primary study (multi-objective sweeps), which its evaluations go to."""

    @property
    def number(self) -> int:
        return self.trial.number


def run_worker(options: WorkerOptions) -> int:
    """Run trials until the sweep's budget or deadline is spent (or a SIGTERM, or
    ``search.max_failures``); returns how many this ran."""
    return run_worker_paused(options)[0]


def run_worker_paused(options: WorkerOptions) -> tuple[int, str | None]:
    """:func:`run_worker`, and why the worker paused (a disk that cannot take a checkpoint:
    its trial was re-queued), or None."""
    import torch

    if options.threads:
        torch.set_num_threads(options.threads)
    quiet_libraries()
    sweep = _open_sweep(options)
    sweep.shutdown.install()
    replay = replay_in_background(
        options.layout,
        name=options.name,
        known_uris={mlflow_tracking_uri(options.layout, sweep.config)},
        store=sweep.store,
    )
    ran = failures = 0
    device = worker_compute(options.threads).device
    with StaleClock(sweep.study):
        while failures < MAX_CONSECUTIVE_FAILURES and not sweep.shutdown.stop.is_set():
            if options.deadline is not None and time.time() >= options.deadline:
                break
            stop = failure_stop(sweep.store, sweep.name, sweep.config.search.max_failures)
            stop = stop or budget_stop(sweep.study, sweep.config.search, device)
            if stop is not None:
                print(stop, flush=True)
                break
            if not sweep.store.claim_slot(options.name):
                break
            trial = start_trial(sweep.study, sweep.store, options)
            with heartbeat(sweep.study, trial), _budget_watch(sweep, device):
                ok = run_one(sweep, trial)
            ran += 1
            _collect(sweep)
            failures = 0 if ok else failures + 1
    # A worker that found no slot left still finishes its replay, within the trackers' wait.
    replay.join(sweep.config.tracking.sink_wait_s)
    sweep.store.dispose()
    return ran, sweep.shutdown.paused


def _budget_watch(sweep: _Sweep, device: Device) -> BudgetWatch:
    every_s = look_s(sweep.config.search)
    budget = sweep.config.search.budget
    return BudgetWatch(
        sweep.study, budget, device, on_spent=sweep.shutdown.request, every_s=every_s
    )


class _Shutdown:
    """SIGTERM (spot reclaim, Slurm preemption, Kubernetes eviction): set ``stop``, which the
    running trial watches (it saves its resumable state and raises TrialInterrupted), take no
    new trial, and exit 0 within ``worker.grace_s`` even if the trial does not stop in time (its
    last evaluation's state is on disk; ``on_timeout`` re-queues it first). A second SIGTERM,
    or a SIGINT after the first, exits at once."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self.stop = threading.Event()
        self.on_timeout: list[Any] = []
        """Callables run (best effort) before the grace runs out: the running trial's re-queue."""
        self.why: str | None = None
        """Why a stop was requested other than by a signal (the compute budget is spent)."""
        self.paused: str | None = None
        """Why the worker stopped for lack of disk."""

    def request(self, why: str) -> None:
        """Stop as SIGTERM would, without its grace deadline: the trial stops after its step
        with its state written and is re-queued, and no new trial starts."""
        self.why = why
        self.stop.set()

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stop.is_set():
            os._exit(128 + signum)
        self.stop.set()
        signal.signal(signal.SIGINT, self._on_signal)
        print(f"worker {os.getpid()}: SIGTERM, stopping within {self.grace_s:g}s", flush=True)
        threading.Thread(target=self._deadline, daemon=True, name="tunefleet-grace").start()

    def _deadline(self) -> None:
        # A margin for the re-queue itself, which is a few database writes.
        time.sleep(max(0.0, self.grace_s - min(5.0, self.grace_s / 4)))
        for callback in list(self.on_timeout):
            try:
                callback()
            except Exception:
                log.warning("re-queueing the interrupted trial failed", exc_info=True)
        print(f"worker {os.getpid()}: grace of {self.grace_s:g}s spent, exiting", flush=True)
        os._exit(0)


def _open_sweep(options: WorkerOptions) -> _Sweep:
    store = Store(options.db_url)
    record = store.get_sweep(options.name)
    config = with_secrets(SweepConfig.model_validate(record.config), options.secrets)
    install_log_redaction(secret_values(config) | url_passwords(options.db_url))
    retries = Retries(
        store, options.name, max_retries=config.search.max_retries, layout=options.layout
    )
    storage = make_storage(
        options.db_url,
        heartbeat_s=config.search.heartbeat_s,
        stale_after_s=config.search.stale_after_s,
        on_stale=retries,
    )
    study = open_study(config, storage=storage, worker=options.index)
    primary = primary_study(config, storage=storage) if config.search.multi_objective else None
    return _Sweep(
        options,
        config,
        study,
        store,
        experiment_id=record.mlflow_experiment_id,
        parent_run_id=record.mlflow_parent_run_id,
        retries=retries,
        shutdown=_Shutdown(config.worker.grace_s),
        primary=primary,
    )


def start_trial(study: optuna.Study, store: Store, options: WorkerOptions) -> optuna.Trial:
    """Ask for a trial (a queued retry comes first) and record who runs it first, so that a
    resumed sweep can tell a dead worker's trial from a live one at once (heartbeats cover the
    short window before this)."""
    trial = study.ask()
    host, pid = socket.gethostname(), os.getpid()
    trial.set_user_attr("host", host)
    trial.set_user_attr("pid", pid)
    trial.set_user_attr(COMPUTE_ATTR, worker_compute(options.threads).attr())
    attempt = attempt_of(trial)
    store.upsert_trial(
        options.name,
        trial.number,
        state="RUNNING",
        host=host,
        pid=pid,
        attempt=attempt.attempt,
        retry_of=attempt.retry_of,
    )
    return trial


def run_one(sweep: _Sweep, trial: optuna.Trial) -> bool:
    """One started trial: prepare -> train -> finish; False if it failed (its slot goes back).

    What ends a trial early decides what happens next (``platform.retries``): a stop request
    or a Ctrl-C re-queues it (interrupted), an OOM may re-queue it with a halved batch, a
    non-finite loss and any other exception fail it for good."""
    from tunefleet.trainers.resume import NonFiniteError, TrialInterrupted, TrialOutOfMemory

    asked = prepare(sweep, trial)
    if isinstance(asked, str):
        return _fail(sweep, trial, "invalid_params", asked, {})
    refused = _disk_refusal(sweep, asked)
    if refused is not None:
        _end_tracking(sweep, asked, "KILLED", interrupted=True)
        _fail(sweep, trial, "interrupted", refused, asked.params)
        sweep.shutdown.paused = refused
        sweep.shutdown.request(refused)
        return True

    def requeue_on_timeout() -> None:
        _fail(sweep, trial, "interrupted", "SIGTERM: the grace ran out", asked.params)

    sweep.shutdown.on_timeout.append(requeue_on_timeout)
    try:
        outcome = train(sweep, asked)
    except (KeyboardInterrupt, TrialInterrupted) as exc:
        _end_tracking(sweep, asked, "KILLED", interrupted=True)
        why = "compute budget spent" if sweep.shutdown.why else last_line(exc)
        _fail(sweep, trial, "interrupted", why, asked.params)
        if isinstance(exc, KeyboardInterrupt):
            raise
        return True
    except optuna.exceptions.UpdateFinishedTrialError:
        # Reporting an evaluation found the trial finished: this worker was taken for dead
        # (stopped, or cut off from the database past search.stale_after_s) and the trial
        # re-queued; the retry owns the logical trial and its resumable state now.
        _end_tracking(sweep, asked, "KILLED")
        print(f"trial {trial.number} was re-queued while this worker was silent", flush=True)
        return True
    except NonFiniteError as exc:
        _end_tracking(sweep, asked, "FAILED")
        return _fail(sweep, trial, "non_finite", f"step {exc.step}: {exc.what}", asked.params)
    except TrialOutOfMemory as exc:
        _end_tracking(sweep, asked, "FAILED")
        return _out_of_memory(sweep, asked, exc)
    except Exception as exc:
        _end_tracking(sweep, asked, "FAILED")
        if not isinstance(exc, TunefleetError):  # a user's mistake needs its message, not a trace
            log.exception("trial %d failed", trial.number)
        full = f"{type(exc).__name__}: {exc}"
        return _fail(sweep, trial, "failed", full, asked.params, detail=last_line(exc))
    finally:
        sweep.shutdown.on_timeout.remove(requeue_on_timeout)
    return finish(sweep, asked, outcome)


def _out_of_memory(sweep: _Sweep, asked: _Trial, exc: Any) -> bool:
    """Failed with the batch size; retried once with the batch halved under ``on_oom:
    halve_batch`` (the effective batch, batch x accumulation, stays the searched one)."""
    detail = f"batch_size {exc.batch_size}, gradient_accumulation_steps {exc.accumulation}"
    halve = asked.config.train.on_oom == "halve_batch" and not asked.attempt.overrides
    overrides = halved_batch(exc.batch_size, exc.accumulation) if halve else None
    return _fail(sweep, asked.trial, "oom", detail, asked.params, overrides=overrides)


def prepare(sweep: _Sweep, trial: optuna.Trial) -> _Trial | str:
    """Draw the trial's params (a retry's are fixed: the same as its first attempt's), apply
    them and a retry's overrides to the config and start its telemetry; or why the params do
    not form a valid config."""
    attempt = attempt_of(trial)
    try:
        params = suggest_params(trial, sweep.config)
        config = apply_params(sweep.config, {**params, **attempt.overrides})
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
        attempted=_take_over(sweep, trial, config, attempt),
    )
    trial.set_user_attr(
        "tracking",
        {
            "spool": tracking.spool.name,
            **run_identity(tracking.header),
            "logged_through": tracking.bus.logged_through,
        },
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
    return _Trial(trial, params, config, tracking, attempt, twin=_twin(sweep, trial))


def _twin(sweep: _Sweep, trial: optuna.Trial) -> optuna.Trial | None:
    """A multi-objective trial's twin in the primary study, each naming the other."""
    if sweep.primary is None:
        return None
    twin = sweep.primary.ask()
    twin.set_user_attr("trial", trial.number)
    trial.set_user_attr("twin", twin.number)
    return twin


def _take_over(
    sweep: _Sweep, trial: optuna.Trial, config: SweepConfig, attempt: Attempt
) -> Attempted:
    """A retry continues its dead attempt's runs: the dead attempt's spool (its name carried in
    the ``tracking`` user attr) is replayed first, and the retry keeps the runs' ids and skips
    the steps already logged. A spool not on this machine (an ``--out`` not shared) cannot be
    replayed here, but the runs' identity still carries over."""
    dead = trial.user_attrs.get("tracking")
    if attempt.attempt == 1 or not isinstance(dead, dict):
        return Attempted(attempt.logical, attempt.attempt)
    logged = dead.get("logged_through")
    spool = sweep.options.layout.spool_dir(sweep.name) / str(dead["spool"])
    if spool.is_file():
        uris = {mlflow_tracking_uri(sweep.options.layout, config)}
        handed = hand_over(spool, known_uris=uris, store=sweep.store)
        logged = max((s for s in (logged, handed.logged_through) if s is not None), default=None)
    else:
        log.warning("trial %d: the dead attempt's spool %s is not here", trial.number, spool)
    return Attempted(
        attempt.logical,
        attempt.attempt,
        spool_id=dead["spool_id"],
        run_ids=dead["run_ids"],
        logged_through=logged,
    )


def train(sweep: _Sweep, asked: _Trial) -> TrialOutcome:
    """Train the trial, each evaluation reported to the pruner; a pruned trial comes back with
    ``pruned`` set and its checkpoint removed (a pruned trial is never promoted: ray#9865).

    The best checkpoint and the resumable state belong to the logical trial (the first
    attempt's number), so that a retry resumes from, and keeps improving on, what the dead
    attempt reached; the resumable state is removed once the logical trial has ended
    (``finish``, or ``platform.retries`` for a failure)."""
    from tunefleet.trainers.resume import resumable_step
    from tunefleet.trainers.run import TrialPruned, TrialRequest, run_trial

    layout = sweep.options.layout
    logical = asked.attempt.logical
    request = TrialRequest(
        sweep=sweep.name,
        number=asked.number,
        params=asked.params,
        checkpoint_dir=layout.checkpoint(sweep.name, logical),
        work_dir=layout.work_dir(sweep.name, asked.number),
        cache_dir=layout.token_cache,
        report=pruning_report(asked.twin or asked.trial),
        callbacks=[asked.tracking.callback],
        resume_dir=layout.resume_dir(sweep.name, logical),
        stop=sweep.shutdown.stop,
    )
    resumed_from = resumable_step(layout.resume_dir(sweep.name, logical))
    if resumed_from is not None:
        # What a retry had to start from: its first new step is the one after this.
        asked.trial.set_user_attr("resumed_from_step", resumed_from)
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
        return _fail(
            sweep, asked.trial, "failed", "no evaluation produced the metric", asked.params
        )
    judged = None
    if not outcome.pruned:
        try:
            judged = judge(asked.config, outcome.metrics, outcome.measured)
        except MissingMetric as exc:
            _end_tracking(sweep, asked, "FAILED")
            return _fail(sweep, asked.trial, "failed", str(exc), asked.params)
    try:
        _tell(sweep, asked, outcome, judged)
    except optuna.exceptions.UpdateFinishedTrialError:
        # This worker was taken for dead (stopped, or cut off from the database past
        # search.stale_after_s) and its trial re-queued: the retry owns the logical trial now.
        _end_tracking(sweep, asked, "KILLED")
        print(f"trial {asked.number} was re-queued while this worker was silent", flush=True)
        return True
    # Only now: a worker whose trial was taken over leaves the state to the retry.
    layout = sweep.options.layout
    shutil.rmtree(layout.resume_dir(sweep.name, asked.attempt.logical), ignore_errors=True)
    record_cost(sweep.store, sweep.name, frozen_trial(sweep.study, asked.trial))
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
        checkpoint_bytes=_checkpoint_bytes(outcome) if complete else None,
        measured=outcome.measured,
        objective_values=judged.values if judged and sweep.config.search.multi_objective else None,
        feasible=judged.feasible if judged else None,
    )
    if complete and not sweep.config.search.multi_objective and _update_best(sweep) == asked.number:
        count = len(own_trials(sweep.study, states=(TrialState.COMPLETE,)))
        asked.tracking.report_best(
            trial=asked.number,
            value=float(outcome.value or 0.0),
            params=asked.params,
            complete=count,
        )
    _end_tracking(sweep, asked, "FINISHED" if complete else "KILLED")
    return True


def _checkpoint_bytes(outcome: TrialOutcome) -> int | None:
    from tunefleet.platform.retention import folder_bytes

    return None if outcome.checkpoint is None else folder_bytes(outcome.checkpoint)


def _disk_refusal(sweep: _Sweep, asked: _Trial) -> str | None:
    """Why the disk cannot take this trial's checkpoint (after a gc, when retention may free
    room), or None; checked before training, so no checkpoint is ever cut short by a full disk."""
    from tunefleet.platform.retention import disk_refusal, estimated_checkpoint_bytes
    from tunefleet.trainers.model import resolve_model

    layout, settings = sweep.options.layout, asked.config.checkpoints
    records = sweep.store.trials(sweep.name)
    try:
        model = resolve_model(asked.config.model.name_or_path)
    except TunefleetError:
        model = asked.config.model.name_or_path  # training names the problem
    estimated = estimated_checkpoint_bytes(records, model)
    refused = disk_refusal(layout, settings, estimated=estimated)
    if refused is not None and _collect(sweep):
        refused = disk_refusal(layout, settings, estimated=estimated)
    return refused


def _collect(sweep: _Sweep) -> bool:
    """Retention's gc after a trial (``checkpoints.gc_after_trial``); whether it printed."""
    from tunefleet.platform.retention import collect_after_trial

    line = collect_after_trial(sweep.store, sweep.options.layout, sweep.name, sweep.config)
    if line is not None:
        print(f"sweep {sweep.name}: {line}", flush=True)
    return line is not None


def _fail(
    sweep: _Sweep,
    trial: optuna.Trial,
    reason: str,
    why: str,
    params: dict[str, Any],
    *,
    detail: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> bool:
    """End the attempt as FAIL with its reason; re-queued when the reason allows
    (``platform.retries``). ``why`` is printed and kept in Optuna, ``detail`` (default: ``why``)
    goes to the store. False: it counts towards the worker's consecutive failures."""
    why = redact_text(why)  # an exception's text may quote a URL or a token
    detail = why if detail is None else redact_text(detail)
    try:
        if taken_over(sweep.study, trial):
            return False
        trial.set_user_attr("fail_reason", why[:2000])
        trial.set_user_attr("reason", reason)
        sweep.study.tell(trial, state=TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False  # found dead and handled by another process meanwhile
    sweep.store.upsert_trial(
        sweep.name, trial.number, params=params, metrics={}, host=socket.gethostname()
    )
    frozen = frozen_trial(sweep.study, trial)
    retried = sweep.retries.end(
        sweep.study, frozen, reason=reason, detail=detail, overrides=overrides
    )
    then = "re-queued" if retried else "failed"
    print(f"trial {trial.number} {then} ({reason}): {why}", flush=True)
    return reason in RETRIED_REASONS


def _tell(sweep: _Sweep, asked: _Trial, outcome: TrialOutcome, judged: Judged | None) -> None:
    """Tell the study (and a multi-objective trial's twin) how the trial ended; a complete
    trial's constraint violations are set first, so samplers and ``best_trial(s)`` see them."""
    if taken_over(sweep.study, asked.trial):
        raise optuna.exceptions.UpdateFinishedTrialError(f"trial {asked.number} is finished")
    asked.trial.set_user_attr("measured", outcome.measured)
    if judged is None:
        sweep.study.tell(asked.trial, state=TrialState.PRUNED)
        _close_twin(sweep, asked, TrialState.PRUNED)
        return
    for rule, violation in judged.violations.items():
        asked.trial.set_constraint(rule, violation)
    values = judged.values if sweep.config.search.multi_objective else outcome.value
    sweep.study.tell(asked.trial, values)
    _close_twin(sweep, asked, TrialState.COMPLETE, outcome.value)


def _close_twin(
    sweep: _Sweep, asked: _Trial, state: TrialState, value: float | None = None
) -> None:
    """End the twin as its trial ended (the primary study's pruner compares later trials with
    complete and pruned twins); once told, later calls do nothing."""
    if asked.twin is None or sweep.primary is None:
        return
    try:
        if state == TrialState.COMPLETE:
            sweep.primary.tell(asked.twin, value)
        else:
            sweep.primary.tell(asked.twin, state=state)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass
    except ValueError:
        pass  # told already in this process (Optuna's cache says so before the storage)


def _update_best(sweep: _Sweep) -> int | None:
    """Records the sweep's best trial; returns its number (None: no feasible trial yet). Never
    a history trial (``search.warm_start``): it has no checkpoint here."""
    best = best_own(sweep.study)
    if best is None:
        return None
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
    _close_twin(sweep, asked, TrialState.FAIL)  # a no-op when finish has told it already
    asked.tracking.close(status, timeout_s=INTERRUPTED_WAIT_S if interrupted else None)
    # Not an Optuna user attr: the trial is told by now, and Optuna refuses changes after that.
    mlflow_run_id = asked.tracking.run_ids().get("mlflow")
    if mlflow_run_id:
        sweep.store.upsert_trial(sweep.name, asked.number, mlflow_run_id=mlflow_run_id)


def worker_main(options: WorkerOptions) -> int:
    """The ``tunefleet worker`` entry: exit code 0 unless the sweep cannot be opened."""
    from tunefleet.platform.retention import PAUSED_EXIT

    try:
        ran, paused = run_worker_paused(options)
    except TunefleetError as exc:
        print(f"error: {redact_text(str(exc))}", flush=True)
        return 2
    if paused is not None:
        print(f"worker {options.index} ({os.getpid()}) paused: {paused}", flush=True)
        return PAUSED_EXIT
    print(f"worker {options.index} ({os.getpid()}) ran {ran} trial(s)", flush=True)
    return 0
