"""``tunefleet sweep --engine ray``: the sweep's workers as Ray actors.

Each actor runs the same worker loop as ``tunefleet worker`` (``platform.worker.run_worker``)
against the study; Ray only places the actors (``num_gpus=K``, or ``num_cpus=C``), isolates them
(Ray sets ``CUDA_VISIBLE_DEVICES`` for an actor with GPUs) and restarts them (``max_restarts``).
The study stays the single source of truth: Ray holds no trial state.

A lost actor (its node gone, its process killed) is seen by the launcher when the actor's call
fails; the trials it was running (recorded with its host and pid) are failed at once and their
budget slots handed back, and the call is sent again to the restarted actor.

Ray is an optional extra (``pip install 'tunefleet[ray]'``) imported only here, lazily.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy.engine import make_url

from tunefleet.errors import TunefleetError
from tunefleet.platform.layout import Layout
from tunefleet.platform.store import Store
from tunefleet.redaction import redact_url

RAY_EXTRA = "pip install 'tunefleet[ray]'"
MAX_RESTARTS = 3
"""Restarts of one actor (node loss, a killed process) before its worker counts as failed."""
MARKER_DIR = ".tunefleet-shared"
"""Under ``--out``: the file each node must see for a multi-node sweep to start."""
RESUBMIT_S = 1.0
"""Pause before a call is sent again to an actor that is restarting."""
IDENTITY_ATTR = "ray_worker_{index}"
"""Study user attr: each actor incarnation's node, host, pid and CUDA_VISIBLE_DEVICES."""


def import_ray() -> ModuleType:
    """Ray, or an error saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise TunefleetError(
            f"--engine ray needs Ray, which is not installed: {RAY_EXTRA} (or use --engine local)"
        ) from exc
    return ray


@dataclass(frozen=True)
class Node:
    node_id: str
    host: str
    address: str
    gpus: float


@dataclass
class RayCluster:
    """A connection to a Ray cluster, checked to suit the sweep."""

    ray: ModuleType
    nodes: list[Node]
    dashboard_url: str | None
    handles: list[RayWorker] = field(default_factory=list)

    def dashboard_line(self) -> str | None:
        if not self.dashboard_url:
            return None
        url = self.dashboard_url
        return f"open {url if '://' in url else 'http://' + url}   # Ray dashboard"

    def shutdown(self) -> None:
        for handle in self.handles:
            handle.stop()
        self.ray.shutdown()


def connect(
    address: str | None,
    *,
    layout: Layout,
    db_url: str,
    gpus_per_trial: int | None,
    workers: int,
) -> RayCluster:
    """Connect to (or start, when ``address`` is None) a Ray cluster and check it can run the
    sweep: a multi-node cluster needs a server database and an ``--out`` every node sees.

    Raises:
        TunefleetError: Ray missing or unreachable, or the cluster refused for this sweep.
    """
    ray = import_ray()
    # Ray 2.60 sets no CUDA_VISIBLE_DEVICES for actors without GPUs (ray#54868); the actors
    # set it themselves, so Ray's notice about the change is noise here.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        context = ray.init(address=address, log_to_driver=True, configure_logging=False)
    except ConnectionError as exc:
        raise TunefleetError(
            f"no Ray cluster answers at {address!r} ({exc}): start one (`ray start --head`), "
            "pass its address (auto, ray://HOST:10001), or leave --address out for a local one"
        ) from exc
    except Exception as exc:
        if type(exc).__name__ != "AuthenticationError":
            raise
        raise TunefleetError(
            f"the Ray cluster at {address!r} wants a token (token authentication, Ray 2.59+): "
            "set RAY_AUTH_TOKEN, or RAY_AUTH_TOKEN_PATH to a file holding it (`ray get-auth-token` "
            "on the head node prints it)"
        ) from exc
    cluster = RayCluster(ray, _nodes(ray), getattr(context, "dashboard_url", None))
    try:
        _check(
            cluster, layout=layout, db_url=db_url, gpus_per_trial=gpus_per_trial, workers=workers
        )
    except BaseException:
        ray.shutdown()
        raise
    return cluster


def _nodes(ray: ModuleType) -> list[Node]:
    return [
        Node(
            node_id=n["NodeID"],
            host=n.get("NodeManagerHostname", "?"),
            address=n.get("NodeManagerAddress", "?"),
            gpus=float(n.get("Resources", {}).get("GPU", 0)),
        )
        for n in ray.nodes()
        if n.get("Alive")
    ]


def _check(
    cluster: RayCluster, *, layout: Layout, db_url: str, gpus_per_trial: int | None, workers: int
) -> None:
    nodes = cluster.nodes
    if gpus_per_trial:
        slots = sum(int(n.gpus // gpus_per_trial) for n in nodes)
        if slots == 0:
            raise TunefleetError(
                f"--gpus-per-trial {gpus_per_trial}: no node of the Ray cluster has that many "
                f"GPUs ({', '.join(f'{n.address}: {n.gpus:g}' for n in nodes)}); leave the flag "
                "out (with --cpus-per-trial) to train on CPUs"
            )
        if workers > slots:
            print(
                f"note: {workers} workers, {slots} GPU slot(s) of {gpus_per_trial} in the cluster "
                "now: the others wait for GPUs (an autoscaler may add them)",
                flush=True,
            )
    if len(nodes) > 1 and make_url(db_url).get_backend_name() == "sqlite":
        raise TunefleetError(
            f"a Ray cluster of {len(nodes)} nodes cannot share the SQLite file of --db "
            f"{redact_url(db_url)}: pass --db postgresql://USER@HOST/DB that every node reaches "
            "(or run on one machine with --engine local)"
        )
    unshared = _nodes_not_seeing(cluster, layout.out)
    if unshared:
        raise TunefleetError(
            f"--out {layout.out} is not shared with the Ray node(s) "
            f"{', '.join(f'{n.host} ({n.address})' for n in unshared)}: checkpoints written "
            "there could not be read back by the launcher, promote or a resumed trial; put "
            "--out on a filesystem every node mounts at the same path (NFS, a cluster "
            "filesystem, a Kubernetes ReadWriteMany volume)"
        )


def _nodes_not_seeing(cluster: RayCluster, out: Path) -> list[Node]:
    """The nodes on which a marker file the launcher just wrote under ``out`` is missing."""
    ray = cluster.ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    marker = out / MARKER_DIR / uuid.uuid4().hex
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(socket.gethostname())
    try:
        probe = ray.remote(num_cpus=0)(_sees)
        refs = [
            probe.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False)
            ).remote(str(marker))
            for node in cluster.nodes
        ]
        seen = ray.get(refs, timeout=300)
    finally:
        marker.unlink(missing_ok=True)
    return [node for node, ok in zip(cluster.nodes, seen, strict=True) if not ok]


def _sees(path: str) -> bool:
    return Path(path).is_file()


@dataclass(frozen=True)
class ActorSpec:
    """What every worker actor gets."""

    name: str
    layout: Layout
    db_url: str
    deadline: float | None
    secrets: dict[str, Any]
    gpus_per_trial: int | None
    cpus_per_trial: int | None


class _WorkerActor:
    """One tunefleet worker in a Ray actor process. Ray prints its output prefixed with this
    class's ``repr``: the worker's index and host."""

    def __init__(self, index: int, spec: ActorSpec) -> None:
        self.index, self.spec = index, spec
        if not spec.gpus_per_trial:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        if spec.cpus_per_trial:
            os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(spec.cpus_per_trial)

    def __repr__(self) -> str:
        return f"worker {self.index} @ {socket.gethostname()}"

    def identity(self) -> dict[str, Any]:
        """Where this incarnation runs; recorded on the study so that its trials (which carry
        host and pid) can be tied to a node and its devices."""
        import optuna
        import ray

        from tunefleet.search.study import make_storage

        who = {
            "node_id": ray.get_runtime_context().get_node_id(),
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        storage = make_storage(self.spec.db_url)
        study = optuna.load_study(study_name=self.spec.name, storage=storage)
        history = study.user_attrs.get(IDENTITY_ATTR.format(index=self.index), [])
        study.set_user_attr(IDENTITY_ATTR.format(index=self.index), [*history, who])
        storage.engine.dispose()
        return who

    def run(self) -> int:
        """The worker loop until the budget or the deadline is spent; trials it ran."""
        from tunefleet.platform.worker import WorkerOptions, run_worker

        spec = self.spec
        return run_worker(
            WorkerOptions(
                name=spec.name,
                layout=spec.layout,
                db_url=spec.db_url,
                index=self.index,
                threads=spec.cpus_per_trial,
                deadline=spec.deadline,
                secrets=spec.secrets,
            )
        )


class RayWorker:
    """A worker actor seen as a process by the launcher's ``watch``: ``poll`` drives it (a lost
    actor's trials failed, its call sent again to the restarted actor) and says when it is done.

    A failed call means the incarnation is gone when Ray says the actor died, or when its node is
    no longer alive; an actor only unreachable (``ActorUnavailableError``) on a live node is
    suspected until it answers again, from the same process (nothing lost) or a new one (the old
    one's trials are failed then)."""

    def __init__(self, cluster: RayCluster, index: int, spec: ActorSpec) -> None:
        ray = cluster.ray
        self.ray, self.index, self.spec = ray, index, spec
        resources: dict[str, Any] = (
            {"num_gpus": spec.gpus_per_trial, "num_cpus": spec.cpus_per_trial or 1}
            if spec.gpus_per_trial
            else {"num_cpus": spec.cpus_per_trial or 1}
        )
        actor_class = ray.remote(max_restarts=MAX_RESTARTS, max_task_retries=0)(_WorkerActor)
        self.actor = actor_class.options(**resources).remote(index, spec)
        self.returncode: int | None = None
        self.restarts = 0
        self.who: dict[str, Any] | None = None
        self.suspect: dict[str, Any] | None = None
        self._resubmit_at = 0.0
        self._submit()

    def _submit(self) -> None:
        # An actor runs its calls in order: its identity is known before its first trial.
        self._who_ref = self.actor.identity.remote()
        self._run_ref = self.actor.run.remote()
        self._pending = False

    def poll(self) -> int | None:
        if self.returncode is not None:
            return self.returncode
        ray = self.ray
        if self._pending:
            if time.monotonic() >= self._resubmit_at:
                self._submit()
            return self._check_suspect()
        if self.who is None and ray.wait([self._who_ref], timeout=0)[0]:
            self._answered(self._get(self._who_ref))
        if not ray.wait([self._run_ref], timeout=0)[0]:
            return self._check_suspect()
        try:
            ran = ray.get(self._run_ref)
        except ray.exceptions.RayActorError as exc:
            self._call_failed(exc)
            return self._check_suspect()
        except ray.exceptions.RayTaskError as exc:
            cause = exc.as_instanceof_cause()
            code = 2 if isinstance(cause, TunefleetError) else 1
            print(f"worker {self.index}: {cause}", flush=True)
            return self._done(code)
        print(f"worker {self.index} ran {ran} trial(s)", flush=True)
        return self._done(0)

    def _get(self, ref: Any) -> dict[str, Any] | None:
        try:
            who: dict[str, Any] = self.ray.get(ref, timeout=0)
        except Exception:  # the incarnation died before it answered: no trial of its own
            return None
        return who

    def _answered(self, who: dict[str, Any] | None) -> None:
        """A (new) incarnation said where it runs; a suspected one that is not it is gone."""
        self.who = who
        if who is not None and self.suspect is not None:
            if (who["node_id"], who["pid"]) != (self.suspect["node_id"], self.suspect["pid"]):
                self._lost(self.suspect, "restarted")
            self.suspect = None

    def _call_failed(self, exc: BaseException) -> None:
        who = self.who or self._get(self._who_ref)
        dead = not isinstance(exc, self.ray.exceptions.ActorUnavailableError)
        if who is None:
            if dead:  # died before it started: counts against the restarts all the same
                self._count_restart(f"{type(exc).__name__} before it started")
        elif dead:
            self._lost(who, type(exc).__name__)
        else:
            self.suspect = who
        self.who = None
        # Sent again shortly: calls to an actor that is restarting fail at once.
        self._pending, self._resubmit_at = True, time.monotonic() + RESUBMIT_S

    def _check_suspect(self) -> int | None:
        if self.suspect is not None and self.suspect["node_id"] not in _alive_node_ids(self.ray):
            suspect, self.suspect = self.suspect, None
            self._lost(suspect, "its node is gone")
        return self.returncode

    def _lost(self, who: dict[str, Any], why: str) -> None:
        ended = fail_trials_of(self.spec, who, why=why)
        fates = [f"{n} {'re-queued' if retried else 'failed'}" for n, retried in ended]
        self._count_restart(f"{who['host']} pid {who['pid']}: {why}; trial(s) {fates or 'none'}")

    def _count_restart(self, what: str) -> None:
        self.restarts += 1
        left = MAX_RESTARTS - self.restarts
        print(
            f"worker {self.index} lost ({what}); "
            + (f"restart {self.restarts} of {MAX_RESTARTS}" if left >= 0 else "no restarts left"),
            flush=True,
        )
        if left < 0:
            self._done(1)

    def _done(self, code: int) -> int:
        self.returncode = code
        # Its resources go back at once, so a restarting actor waiting for a GPU can start.
        self.ray.kill(self.actor, no_restart=True)
        return code

    def stop(self) -> None:
        """Stop the actor now, its running trials re-queued (the sweep is ending)."""
        if self.returncode is None:
            self.terminate()
            self.wait(0)

    def terminate(self) -> None:
        """Ctrl-C or SIGTERM to the launcher: the actor's process is sent SIGTERM on its node
        (by a zero-CPU task pinned there: Ray sends actors no signal of its own), so its worker
        saves the running trial's state after the current step and re-queues it, as a local
        worker does; ``wait`` gives it the grace."""
        if self.returncode is not None:
            return
        self.who = self.who or self._get(self._who_ref)
        if self.who:
            _signal(self.ray, self.who, signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        """Wait at most ``timeout`` for the actor's worker to end, then kill the actor and
        re-queue what it still ran (its trials resume from their last state)."""
        if self.returncode is not None:
            return self.returncode
        self.ray.wait([self._run_ref], timeout=timeout)
        self.ray.kill(self.actor, no_restart=True)
        who = self.who or self._get(self._who_ref)
        if who:
            fail_trials_of(self.spec, who, why="the sweep was stopped")
        self.returncode = 130
        return 130

    def kill(self) -> None:
        self.wait(0)


def _signal(ray: ModuleType, who: dict[str, Any], signum: int) -> None:
    """Send ``signum`` to an actor incarnation's process, on its node."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    task = ray.remote(num_cpus=0)(_send_signal)
    ref = task.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(who["node_id"], soft=False)
    ).remote(int(who["pid"]), int(signum))
    try:
        ray.get(ref, timeout=30)
    except Exception as exc:  # the node is gone: the kill that follows re-queues its trials
        print(f"could not signal the actor on {who['host']}: {exc}", flush=True)


def _send_signal(pid: int, signum: int) -> bool:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        return False
    return True


def _alive_node_ids(ray: ModuleType) -> set[str]:
    return {node.node_id for node in _nodes(ray)}


def fail_trials_of(spec: ActorSpec, who: dict[str, Any], *, why: str) -> list[tuple[int, bool]]:
    """End the attempts a lost actor incarnation was running (known by its host and pid) as
    interrupted: each slot goes back and the trial is re-queued with the same params (up to
    ``search.max_retries``) to resume from its last state on whichever actor takes it; the
    trials' numbers, each with whether it was re-queued."""
    import optuna

    from tunefleet.config import SweepConfig
    from tunefleet.platform.retries import Retries
    from tunefleet.search.liveness import fail_trial
    from tunefleet.search.study import make_storage

    store = Store(spec.db_url)
    storage = make_storage(spec.db_url)
    try:
        study = optuna.load_study(study_name=spec.name, storage=storage)
        config = SweepConfig.model_validate(store.get_sweep(spec.name).config)
        retries = Retries(
            store, spec.name, max_retries=config.search.max_retries, layout=spec.layout
        )
        ended = []
        for record in store.trials(spec.name):
            if record.state != "RUNNING" or (record.host, record.pid) != (who["host"], who["pid"]):
                continue
            if fail_trial(study, record.number):
                [frozen] = [
                    t for t in study.get_trials(deepcopy=False) if t.number == record.number
                ]
                detail = f"Ray actor on {who['host']} (pid {who['pid']}) lost: {why}"
                retried = retries.end(study, frozen, reason="interrupted", detail=detail)
                ended.append((record.number, retried))
        return ended
    finally:
        storage.engine.dispose()
        store.dispose()


def start_actors(cluster: RayCluster, spec: ActorSpec, *, workers: int) -> list[RayWorker]:
    cluster.handles = [RayWorker(cluster, index, spec) for index in range(workers)]
    return cluster.handles
