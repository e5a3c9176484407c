"""``tunefleet sweep``: validate, create (or resume) the study and the sweep record, start the
workers, show progress, and print where to look next."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol

import optuna
from optuna.trial import TrialState

from tunefleet.config import SweepConfig, flatten
from tunefleet.errors import ConfigError, TunefleetError
from tunefleet.platform.checks import check_sweep, warm_start_plan
from tunefleet.platform.cost import budget_end
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.pareto import front_of
from tunefleet.platform.progress import sweep_progress
from tunefleet.platform.quiet import quiet_libraries
from tunefleet.platform.retention import PAUSED_EXIT
from tunefleet.platform.retries import Retries, failure_stop
from tunefleet.platform.run_tracking import (
    end_sweep_tracking,
    reopen_sweep_tracking,
    start_sweep_tracking,
)
from tunefleet.platform.store import Store
from tunefleet.redaction import (
    SECRETS_ENV,
    install_log_redaction,
    redact_url,
    secret_params,
    secret_values,
    url_passwords,
)
from tunefleet.search.liveness import StaleClock, fail_stale_trials, fail_trial
from tunefleet.search.study import grid_size, make_storage, open_study
from tunefleet.search.warm_start import best_own, own_trials
from tunefleet.tracking.mlflow_sink import fail_fast_http

if TYPE_CHECKING:
    from tunefleet.platform.ray_engine import RayCluster

#: Keys a resumed sweep may change: they set how much more to run, or how failures are
#: handled, not what a trial is.
RESUMABLE_KEYS = (
    "search.trials",
    "search.timeout",
    "search.max_retries",
    "search.max_failures",
    "search.heartbeat_s",
    "search.stale_after_s",
    "worker.grace_s",
    "search.budget.gpu_hours",
    "search.budget.cpu_hours",
    "search.budget.price_per_gpu_hour",
    "search.budget.price_per_cpu_hour",
    # Retention: a resume after a full disk changes what is kept.
    "checkpoints.keep_top_k",
    "checkpoints.max_disk_gb",
    "checkpoints.gc_after_trial",
    "checkpoints.min_free_gb",
)
INTERRUPTED = 130
"""The sweep's exit code when stopped by Ctrl-C or SIGTERM."""


@dataclass(frozen=True)
class Placement:
    """Where a sweep's workers run: ``local`` processes on this machine (the default), or
    ``ray`` actors on a Ray cluster (``platform/ray_engine.py``)."""

    engine: Literal["local", "ray"] = "local"
    address: str | None = None
    """Ray only: ``auto``, ``ray://HOST:10001`` or a GCS address; None starts a local cluster."""
    gpus_per_trial: int | None = None
    cpus_per_trial: int | None = None
    """Ray only: CPUs an actor reserves (and its torch threads) where trials get no GPU."""


class WorkerProcess(Protocol):
    """What ``watch`` needs of a worker: a ``subprocess.Popen``, or a Ray actor's handle."""

    @property
    def returncode(self) -> int | Any: ...

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...

    def kill(self) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


@dataclass(frozen=True)
class Slot:
    """What one worker process gets: its GPUs, or a share of the CPU threads."""

    index: int
    env: dict[str, str]
    threads: int | None


def plan_slots(
    workers: int,
    *,
    gpus_per_trial: int | None = None,
    devices: Sequence[str] | None = None,
    cpus: int | None = None,
) -> list[Slot]:
    """Each local worker's slot.

    Args:
        workers: How many workers.
        gpus_per_trial: Disjoint sets of this many devices, one per worker; more workers than
            sets is refused. None: one device per worker, shared round-robin (the default).
        devices: The visible devices (default: ``CUDA_VISIBLE_DEVICES``, else every GPU
            ``nvidia-smi`` lists).
        cpus: CPU cores to split between workers without GPUs (default: ``os.cpu_count()``).

    Raises:
        TunefleetError: ``--gpus-per-trial`` without GPUs, or more workers than GPU slots.
    """
    visible = list(devices) if devices is not None else _visible_devices()
    if gpus_per_trial is not None:
        return _gpu_slots(workers, gpus_per_trial, visible)
    if visible:
        # The device's own id: CUDA_VISIBLE_DEVICES=2,3 must give workers "2" and "3", not 0 and 1.
        return [
            Slot(i, {"CUDA_VISIBLE_DEVICES": visible[i % len(visible)]}, None)
            for i in range(workers)
        ]
    threads = max(1, (cpus or os.cpu_count() or 1) // workers)
    env = {
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
    }
    return [Slot(i, env, threads) for i in range(workers)]


def _gpu_slots(workers: int, per_trial: int, visible: list[str]) -> list[Slot]:
    if per_trial < 1:
        raise TunefleetError(f"--gpus-per-trial must be at least 1, got {per_trial}")
    if not visible:
        raise TunefleetError(
            f"--gpus-per-trial {per_trial}: no GPU is visible (CUDA_VISIBLE_DEVICES is empty "
            "or nvidia-smi lists none); leave the flag out to train on the CPU"
        )
    slots = len(visible) // per_trial
    if workers > slots:
        raise TunefleetError(
            f"--workers {workers} with --gpus-per-trial {per_trial} needs "
            f"{workers * per_trial} GPUs; {len(visible)} visible ({','.join(visible)}) give "
            f"{slots} slot(s): use --workers {max(slots, 1)} or a smaller --gpus-per-trial"
        )
    return [
        Slot(
            i,
            {"CUDA_VISIBLE_DEVICES": ",".join(visible[i * per_trial : (i + 1) * per_trial])},
            None,
        )
        for i in range(workers)
    ]


def _visible_devices() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip()]
    return [str(i) for i in range(_gpu_count())]


def _gpu_count() -> int:
    """GPUs ``nvidia-smi`` lists (0 where it is missing)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def prepare_sweep(config: SweepConfig, layout: Layout, db_url: str) -> Store:
    """Create or resume the study and the sweep record; refuse a changed config for a name."""
    check_sweep(config)
    layout.ensure()
    store = Store(db_url)
    existing = store.find_sweep(config.name)
    if existing is not None:
        _refuse_changed(config, SweepConfig.model_validate(existing.config))
    warm = warm_start_plan(config, store, db_url)  # refused before anything is recorded
    study = open_study(config, storage=make_storage(db_url), create=True)
    record = store.create_sweep(
        config.name, config=config.model_dump(mode="json"), budget=config.search.trials
    )
    store.set_budget(config.name, budget=budget(config))
    # A resume's changed RESUMABLE_KEYS (a raised compute budget) reach the workers too.
    store.set_config(config.name, config=config.model_dump(mode="json"))
    if warm is not None:
        warm.apply(study, config, limit=budget(config), say=lambda line: print(line, flush=True))
    ids = _sweep_tracking(config, layout, record.mlflow_parent_run_id)
    if ids is not None:
        store.set_mlflow_ids(config.name, experiment_id=ids[0], parent_run_id=ids[1])
    recover(store, config, db_url, layout=layout)
    return store


def _sweep_tracking(
    config: SweepConfig, layout: Layout, parent_run_id: str | None
) -> tuple[str, str] | None:
    """The parent run, created (a new sweep: its ids) or running again (a resumed one); a
    tracker that cannot be reached now stops the sweep before any trial (its trials would have
    no MLflow run to replay into). Running it again resumes."""
    fail_fast_http()
    try:
        if parent_run_id is None:
            return start_sweep_tracking(config, layout)
        reopen_sweep_tracking(config, layout, parent_run_id)
        return None
    except Exception as exc:
        raise TunefleetError(
            f"MLflow at {redact_url(mlflow_tracking_uri(layout, config))} cannot be reached "
            f"({type(exc).__name__}): start it, point tracking.mlflow.tracking_uri (or "
            "MLFLOW_TRACKING_URI) at a running server, or set tracking.mlflow.enabled: false"
        ) from exc


def _refuse_changed(new: SweepConfig, old: SweepConfig) -> None:
    # Redacted dumps on both sides: the store holds no secrets, so a new token or password is
    # not a change (and the same one must not read as one).
    a, b = flatten(new.model_dump(mode="json")), flatten(old.model_dump(mode="json"))
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k) and k not in RESUMABLE_KEYS)
    if changed:
        raise ConfigError(
            [
                (
                    "name",
                    f"a sweep named {new.name!r} already exists with a different "
                    f"config (differs at: {', '.join(changed[:8])}); resume it with "
                    "its own config, or pick another --name",
                )
            ]
        )


def budget(config: SweepConfig) -> int:
    """``search.trials``, capped at the grid's size: past it a grid sampler only repeats."""
    size = grid_size(config)
    return config.search.trials if size is None else min(size, config.search.trials)


def retrying_study(
    store: Store, config: SweepConfig, db_url: str, *, layout: Layout
) -> optuna.Study:
    """The study on a storage whose stale trials are re-queued (``platform.retries``)."""
    retries = Retries(store, config.name, max_retries=config.search.max_retries, layout=layout)
    storage = make_storage(
        db_url,
        heartbeat_s=config.search.heartbeat_s,
        stale_after_s=config.search.stale_after_s,
        on_stale=retries,
    )
    return optuna.load_study(study_name=config.name, storage=storage)


def recover(store: Store, config: SweepConfig, db_url: str, *, layout: Layout) -> None:
    """Re-queue (or fail) trials left RUNNING by a dead worker, then recount the budget's
    claimed slots.

    Heartbeats catch dead workers on other hosts after ``search.stale_after_s`` (optuna#3215); a
    dead process on this host is known at once, so a resumed sweep does not wait for that.
    """
    study = retrying_study(store, config, db_url, layout=layout)
    requeue_dead_workers(study, store, config, layout=layout)
    fail_stale_trials(study)
    counted = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
    # History trials (search.warm_start) are in the study but were never run by this sweep.
    store.set_claimed(config.name, claimed=len(own_trials(study, states=counted)))


def requeue_dead_workers(
    study: optuna.Study,
    store: Store,
    config: SweepConfig,
    *,
    layout: Layout,
    pids: set[int] | None = None,
) -> list[tuple[int, bool]]:
    """Trials RUNNING on this host under a process that is gone (or one of ``pids``, known
    dead): failed as interrupted and re-queued (up to ``search.max_retries``); their numbers,
    each with whether it was re-queued."""
    retries = Retries(store, config.name, max_retries=config.search.max_retries, layout=layout)
    host, found = socket.gethostname(), []
    for record in store.trials(config.name):
        if record.state != "RUNNING" or record.host != host or record.pid is None:
            continue
        if (record.pid not in pids) if pids is not None else _alive(record.pid):
            continue
        if fail_trial(study, record.number):
            [frozen] = [t for t in study.get_trials(deepcopy=False) if t.number == record.number]
            detail = f"worker pid {record.pid} on {host} died"
            retried = retries.end(study, frozen, reason="interrupted", detail=detail)
            found.append((record.number, retried))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A killed worker whose parent died too may linger as a zombie nobody reaps.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def start_workers(
    name: str,
    layout: Layout,
    db_url: str,
    *,
    workers: int,
    deadline: float | None,
    secrets: dict[str, Any] | None = None,
    gpus_per_trial: int | None = None,
) -> list[subprocess.Popen[bytes]]:
    """``secrets`` (dotted path -> real value) travel in the environment: the store has them
    redacted, and a command line is visible to every user of the host (``ps``)."""
    return [
        start_worker(slot, name, layout, db_url, deadline=deadline, secrets=secrets)
        for slot in plan_slots(workers, gpus_per_trial=gpus_per_trial)
    ]


def start_worker(
    slot: Slot,
    name: str,
    layout: Layout,
    db_url: str,
    *,
    deadline: float | None,
    secrets: dict[str, Any] | None = None,
) -> subprocess.Popen[bytes]:
    extra = {SECRETS_ENV: json.dumps(secrets)} if secrets else {}
    command = [
        sys.executable,
        "-m",
        "tunefleet",
        "worker",
        name,
        "--out",
        str(layout.out),
        "--db",
        db_url,
        "--index",
        str(slot.index),
    ]
    if slot.threads:
        command += ["--threads", str(slot.threads)]
    if deadline is not None:
        command += ["--deadline", str(deadline)]
    return subprocess.Popen(command, env={**os.environ, **slot.env, **extra})


@dataclass
class Fleet:
    """A sweep's running workers, whatever placed them. Ray's actors recover on their own: the
    engine restarts a lost actor, and polling its handle (``RayWorker.poll``) re-queues the
    trial it held, so a Ray fleet needs no more than this."""

    config: SweepConfig
    store: Store
    study: optuna.Study
    procs: Sequence[WorkerProcess]

    def running(self) -> bool:
        # Every worker polled each round (no short-circuit): a Ray worker's poll also handles
        # a lost actor.
        return any([p.poll() is None for p in self.procs])

    def check(self) -> None:
        """Recover from dead workers; the engine's own business by default."""

    def terminate(self) -> None:
        """SIGTERM every worker: each saves its trial's state and re-queues it within
        ``worker.grace_s``; a worker still there after that (and a margin) is killed (a Ray
        actor's trials are then re-queued from their last evaluation)."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        limit = time.time() + self.config.worker.grace_s + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, limit - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@dataclass
class LocalFleet(Fleet):
    """The local engine's worker processes, one per slot, and what the launcher does when one
    dies: its trial is re-queued at once (the process check; no waiting for a stale
    heartbeat), and a slot whose worker exited is started again while a retry waits for a
    worker and the budget has a free slot."""

    procs: list[subprocess.Popen[bytes]]
    layout: Layout
    db_url: str
    slots: list[Slot]
    deadline: float | None = None
    secrets: dict[str, Any] | None = None
    _seen_dead: set[int] = field(default_factory=set)
    _restarts: int = 0

    def check(self) -> None:
        dead = {p.pid for p in self.procs if p.poll() is not None} - self._seen_dead
        for p in self.procs:
            if p.pid in dead:
                print(f"worker {p.pid} exited ({p.returncode})", flush=True)
        if dead:
            self._seen_dead |= dead
            requeued = requeue_dead_workers(
                self.study, self.store, self.config, layout=self.layout, pids=dead
            )
            for number, retried in requeued:
                then = "re-queued" if retried else "failed (search.max_retries)"
                print(f"trial {number}: its worker died; {then}", flush=True)
        if self._retry_waits():
            for i, proc in enumerate(self.procs):
                # A worker paused for disk (exit 75) is not started again: free the disk first.
                if proc.poll() is not None and proc.returncode != PAUSED_EXIT:
                    self._restarts += 1
                    slot = self.slots[i]
                    # A new sampler seed offset: the same one would draw its first params again.
                    index = slot.index + len(self.slots) * self._restarts
                    self.procs[i] = start_worker(
                        Slot(index, slot.env, slot.threads),
                        self.config.name,
                        self.layout,
                        self.db_url,
                        deadline=self.deadline,
                        secrets=self.secrets,
                    )
                    break  # one at a time: the next check sees whether more are needed

    def _retry_waits(self) -> bool:
        if self.deadline is not None and time.time() >= self.deadline:
            return False
        if not self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            return False
        if failure_stop(self.store, self.config.name, self.config.search.max_failures):
            return False
        if budget_end(self.study, self.config.search, trials=budget(self.config)):
            return False  # a worker started now would stop at the compute budget's gate
        sweep = self.store.get_sweep(self.config.name)
        return sweep.claimed < sweep.budget


def progress_line(study: optuna.Study, budget: int, started: float) -> str:
    trials = own_trials(study)
    count = {state: sum(t.state == state for t in trials) for state in TrialState}
    done = count[TrialState.COMPLETE] + count[TrialState.PRUNED]
    line = (
        f"[{time.time() - started:5.0f}s] done {done}/{budget}"
        f" · running {count[TrialState.RUNNING]}"
        f" · pruned {count[TrialState.PRUNED]} · failed {count[TrialState.FAIL]}"
    )
    if count[TrialState.COMPLETE] and len(study.directions) > 1:
        # Several objectives have a front, not a best (best_trial raises there).
        line += f" · front {len(study.best_trials)}"
        return line
    best = best_own(study)
    if best is not None:
        line += f" · best {best.values[0]:.4f} (trial {best.number})"
    elif count[TrialState.COMPLETE]:
        line += " · no feasible trial yet"
    return line


PROGRESS_EVERY_S = 5.0
"""How often the progress line is printed again while only the running trials' steps move."""


def live_progress(fleet: Fleet, budget: int) -> str:
    """The running trials' steps and ETAs and the sweep's ETA (``platform.progress``)."""
    records = {r.number: r for r in fleet.store.trials(fleet.config.name)}
    trials = own_trials(fleet.study)
    return sweep_progress(trials, records, budget=budget, workers=len(fleet.procs)).line()


def watch(fleet: Fleet, budget: int) -> int:
    """Print a progress line whenever a trial changes state, and every ``PROGRESS_EVERY_S``
    while running trials move (their step, ETA and the sweep's), until every worker exits;
    their worst code. Meanwhile: dead workers' trials are re-queued (``Fleet.check``), and
    stale trials are looked for every ``search.heartbeat_s`` (``StaleClock``), even while no
    worker asks."""
    started, last, printed = time.time(), ("", ""), 0.0
    study = fleet.study
    try:
        with StaleClock(study):
            while True:
                # Polled before the check: a worker that dies while the check runs is seen
                # by the next round's check, never left with its trial RUNNING.
                alive = fleet.running()
                fleet.check()  # may start a worker again, for a retry that waits
                if not alive and not fleet.running():
                    break
                line = progress_line(study, budget, started)
                now = (line.split("]", 1)[1], live_progress(fleet, budget))
                moved = now[1] != last[1] and time.time() - printed >= PROGRESS_EVERY_S
                if now[0] != last[0] or moved:
                    print(line + now[1], flush=True)
                    last, printed = now, time.time()
                time.sleep(2)
    except KeyboardInterrupt:
        fleet.terminate()
        print("interrupted: run the same command again to resume", flush=True)
        return INTERRUPTED
    print(progress_line(study, budget, started), flush=True)
    stop = failure_stop(fleet.store, fleet.config.name, fleet.config.search.max_failures)
    if stop is not None:
        print(stop, flush=True)
        return 1
    # A worker killed by a signal (a negative code) is a failed worker: exit 1, not 256 - N.
    return max(1 if (p.returncode or 0) < 0 else (p.returncode or 0) for p in fleet.procs)


def summary(config: SweepConfig, store: Store, layout: Layout, db_url: str) -> dict[str, Any]:
    best = store.best(config.name)
    trial = store.trial(config.name, best.number) if best else None
    return {
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "params": best.params,
            "checkpoint": best.checkpoint,
            "metrics": trial.metrics if trial else {},
        },
        "front": _front(config, db_url),
        "dashboards": dashboards(config, layout, db_url),
    }


def _front(config: SweepConfig, db_url: str) -> list[dict[str, Any]] | None:
    """A multi-objective sweep's Pareto front (``platform.pareto``), best in the first
    objective first; None for a single-objective sweep."""
    if not config.search.multi_objective:
        return None
    storage = make_storage(db_url)
    try:
        study = optuna.load_study(study_name=config.name, storage=storage)
        front = front_of(own_trials(study), config.search.all_objectives)
        params = {t.number: t.params for t in study.get_trials(deepcopy=False)}
    finally:
        storage.remove_session()
        storage.engine.dispose()
    return [
        {"number": n, "values": list(front.values[n]), "params": params[n]} for n in front.members
    ]


def dashboards(config: SweepConfig, layout: Layout, db_url: str) -> list[str]:
    lines = [f"optuna-dashboard {redact_url(db_url)}"]
    if config.tracking.mlflow.enabled:
        uri = redact_url(mlflow_tracking_uri(layout, config))
        if uri.startswith("sqlite"):
            lines.append(f"mlflow ui --backend-store-uri {uri} --port 5000")
        else:
            lines.append(f"open {uri}")
    if config.tracking.wandb.enabled and config.tracking.wandb.mode == "offline":
        lines.append(f"wandb sync {layout.wandb_dir / 'wandb'}/offline-run-*   # upload to W&B")
    lines.append(
        f"tunefleet compare {config.name} --out {layout.out} --html {config.name}-report.html"
    )
    return lines


def print_summary(config: SweepConfig, info: dict[str, Any], *, wall_s: float) -> None:
    best = info["best"]
    print(f"\nsweep {config.name}: finished in {wall_s:.0f}s")
    if info.get("budget_end"):
        print(f"the compute budget ended it ({info['budget_end']})")
    if info.get("front") is not None:
        _print_front(config, info["front"])
    elif best is None:
        print("no trial completed")
    else:
        metric = config.search.metric
        print(f"best trial {best['number']}: {metric} = {best['value']:.4f}")
        test = {k: v for k, v in best["metrics"].items() if k.startswith("test_")}
        if test:
            print("held-out test: " + ", ".join(f"{k} = {v:.4f}" for k, v in sorted(test.items())))
        print("params: " + json.dumps(best["params"]))
        print(f"checkpoint: {best['checkpoint']}")
    print("\nlook at it:")
    for line in info["dashboards"]:
        print(f"  {line}")


def _print_front(config: SweepConfig, front: list[dict[str, Any]]) -> None:
    names = [o.metric for o in config.search.all_objectives]
    if not front:
        print("no feasible trial completed: the Pareto front is empty")
        return
    print(f"Pareto front ({len(front)} trials; promote one with --trial N or --prefer METRIC):")
    for member in front:
        figures = ", ".join(f"{n} = {v:.6g}" for n, v in zip(names, member["values"], strict=True))
        print(f"  trial {member['number']}: {figures}")


def run_sweep(
    config: SweepConfig,
    *,
    layout: Layout,
    db_url: str,
    workers: int,
    placement: Placement = Placement(),
) -> int:
    quiet_libraries()
    install_log_redaction(secret_values(config) | url_passwords(db_url))
    started = time.time()
    # Ray's refusals (a multi-node cluster on SQLite, an unshared --out) come before anything.
    cluster = _connect(placement, layout, db_url, workers)
    try:
        store = prepare_sweep(config, layout, db_url)
        deadline = started + config.search.timeout if config.search.timeout else None
        study = retrying_study(store, config, db_url, layout=layout)
        total = budget(config)
        print(
            f"sweep {config.name}: {total} trials, {workers} worker(s) on {placement.engine}, "
            f"store {redact_url(db_url)}, out {layout.out}",
            flush=True,
        )
        ray_line = cluster.dashboard_line() if cluster is not None else None
        if ray_line:
            print(f"  {ray_line}", flush=True)
        parent_run_id = store.get_sweep(config.name).mlflow_parent_run_id
        with _ParentRunEnd(config, layout, parent_run_id) as end:
            fleet = _start(
                cluster, config, store, study, layout, db_url, workers, deadline, placement
            )
            code = watch(fleet, total)
            # A sweep the compute budget ended did what it was told, completed trial or not.
            ended = budget_end(study, config.search, trials=total)
            code = code or (0 if store_has_complete(study) or ended else 1)
            end.status = "FINISHED" if code == 0 else "KILLED" if code == INTERRUPTED else "FAILED"
    finally:
        if cluster is not None:
            cluster.shutdown()
    info = summary(config, store, layout, db_url)
    info["budget_end"] = ended
    if ray_line:
        info["dashboards"].append(ray_line)
    print_summary(config, info, wall_s=time.time() - started)
    store.dispose()
    return code


def _connect(placement: Placement, layout: Layout, db_url: str, workers: int) -> RayCluster | None:
    if placement.engine != "ray":
        if placement.gpus_per_trial is not None:
            plan_slots(workers, gpus_per_trial=placement.gpus_per_trial)  # refused before any trial
        return None
    from tunefleet.platform.ray_engine import connect

    return connect(
        placement.address,
        layout=layout,
        db_url=db_url,
        gpus_per_trial=placement.gpus_per_trial,
        workers=workers,
    )


def _start(
    cluster: RayCluster | None,
    config: SweepConfig,
    store: Store,
    study: optuna.Study,
    layout: Layout,
    db_url: str,
    workers: int,
    deadline: float | None,
    placement: Placement,
) -> Fleet:
    secrets = secret_params(config)
    if cluster is None:
        slots = plan_slots(workers, gpus_per_trial=placement.gpus_per_trial)
        procs = [
            start_worker(slot, config.name, layout, db_url, deadline=deadline, secrets=secrets)
            for slot in slots
        ]
        return LocalFleet(config, store, study, procs, layout, db_url, slots, deadline, secrets)
    from tunefleet.platform.ray_engine import ActorSpec, start_actors

    spec = ActorSpec(
        name=config.name,
        layout=layout,
        db_url=db_url,
        deadline=deadline,
        secrets=secrets,
        gpus_per_trial=placement.gpus_per_trial,
        cpus_per_trial=placement.cpus_per_trial,
    )
    return Fleet(config, store, study, start_actors(cluster, spec, workers=workers))


class _ParentRunEnd:
    """Ends the sweep's MLflow parent run as the sweep ends: FINISHED (exit 0: the budget or
    the time is spent), KILLED (Ctrl-C or SIGTERM, exit 130), FAILED (anything else: workers
    failing, no trial complete, an error). SIGTERM stops the workers as Ctrl-C does."""

    def __init__(self, config: SweepConfig, layout: Layout, parent_run_id: str | None) -> None:
        self.config, self.layout, self.parent_run_id = config, layout, parent_run_id
        self.status = "FAILED"
        self._sigterm: Any = None

    def __enter__(self) -> _ParentRunEnd:
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._sigterm is not None:
            signal.signal(signal.SIGTERM, self._sigterm)
        if kind is not None:
            self.status = "KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED"
        if self.parent_run_id is not None:
            end_sweep_tracking(self.config, self.layout, self.parent_run_id, status=self.status)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def store_has_complete(study: optuna.Study) -> bool:
    return bool(own_trials(study, states=(TrialState.COMPLETE,)))
