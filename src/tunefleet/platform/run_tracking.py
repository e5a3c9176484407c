"""A run's tracking, bound to the platform: its config, its ``--out`` layout and its store meet
tracking's sinks here, and nowhere else.

``start_*_tracking`` describe a run's sinks in its spool header (through tracking's sink
registry: tracker URIs with passwords redacted, experiment and parent run, W&B project and run
id, the store), then build them back from that header the way ``tunefleet sync`` does in another
process, so a live run and a replay cannot differ. The sweep's MLflow parent run is created,
ended and reopened here too.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tunefleet.platform.store_sink  # noqa: F401 - registers the "store" sink
from tunefleet.config import SweepConfig, flatten
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.redaction import redact_params, redact_url
from tunefleet.tracking.bus import TelemetryBus
from tunefleet.tracking.callback import TrackingCallback
from tunefleet.tracking.console_sink import ConsoleSink
from tunefleet.tracking.events import BestSoFar, RunInfo
from tunefleet.tracking.mlflow_sink import (
    end_parent_run,
    ensure_experiment,
    fail_fast_http,
    make_client,
    reopen_parent_run,
    start_parent_run,
)
from tunefleet.tracking.sinks import RunSetup, Sink, build_sinks, describe_sinks
from tunefleet.tracking.spool import Cursors, SpoolWriter, new_spool_path, sibling
from tunefleet.tracking.system import SystemMonitor
from tunefleet.trainers.checkpoint import EVALUATION

log = logging.getLogger(__name__)


def start_sweep_tracking(config: SweepConfig, layout: Layout) -> tuple[str, str] | None:
    """(experiment id, parent run id) of a new sweep's MLflow parent run, or None if disabled."""
    if not config.tracking.mlflow.enabled:
        return None
    client = make_client(mlflow_tracking_uri(layout, config))
    experiment_id = _experiment(client, config, layout)
    params = redact_params(flatten(config.model_dump(mode="json", exclude={"search": {"space"}})))
    return experiment_id, start_parent_run(
        client, experiment_id=experiment_id, sweep=config.name, params=params
    )


def reopen_sweep_tracking(config: SweepConfig, layout: Layout, parent_run_id: str) -> None:
    """A resumed sweep: its parent run is running again."""
    reopen_parent_run(make_client(mlflow_tracking_uri(layout, config)), parent_run_id)


def end_sweep_tracking(
    config: SweepConfig, layout: Layout, parent_run_id: str, *, status: str
) -> None:
    """The sweep ended with ``status`` (FINISHED, FAILED, KILLED): so does its parent run. A
    tracker that cannot be reached gets a warning: the sweep's own outcome stands."""
    uri = mlflow_tracking_uri(layout, config)
    try:
        end_parent_run(make_client(uri), parent_run_id, status=status)
    except Exception as exc:
        log.warning(
            "MLflow at %s: the sweep's parent run %s was not ended %s (%s: %s); it shows "
            "RUNNING until the sweep runs again",
            redact_url(uri),
            parent_run_id,
            status,
            type(exc).__name__,
            exc,
        )


def _experiment(client: Any, config: SweepConfig, layout: Layout) -> str:
    # A local store keeps its artifacts beside it; a server decides for itself.
    uri = mlflow_tracking_uri(layout, config)
    artifacts = layout.mlflow_artifacts.as_uri() if uri.startswith("sqlite") else None
    return ensure_experiment(client, config.name, artifact_location=artifacts)


@dataclass
class RunTracking:
    """A run's bus, its callback for Trainer, and its system monitor."""

    bus: TelemetryBus
    callback: TrackingCallback
    monitor: SystemMonitor | None
    spool: Path
    wait_s: float
    sinks: dict[str, Sink]
    header: Mapping[str, Any] = field(default_factory=dict)
    """The spool's header: who the run is, and its sinks."""

    def report_best(
        self, *, trial: int, value: float, params: Mapping[str, Any], complete: int
    ) -> None:
        """This trial is the sweep's new best; ``complete``: the sweep's complete trials now."""
        event = BestSoFar(
            trial, value, redact_params(dict(params)), complete, int(time.time() * 1000)
        )
        self.bus.emit([event])

    def close(self, status: str, *, timeout_s: float | None = None) -> dict[str, int]:
        """End the run, waiting for the sinks at most ``timeout_s`` (default
        ``tracking.sink_wait_s``); returns events each sink has not acknowledged (left in the
        spool)."""
        if self.monitor is not None:
            self.monitor.stop()
        wait = self.wait_s if timeout_s is None else timeout_s
        unsent = self.bus.close(status=status, timeout_s=wait)
        left = {name: n for name, n in unsent.items() if n}
        if left:
            log.warning(
                "%s: not yet delivered %s (%s); `tunefleet sync` sends them",
                self.spool.name,
                left,
                "; ".join(f"{k}: {v}" for k, v in self.bus.errors.items()),
            )
        return left

    def run_ids(self) -> dict[str, str]:
        """Sink name -> the id of this run in that tracker, for the sinks that know one yet
        (MLflow's is created on the bus thread, so it may come only after the first delivery)."""
        return {name: sink.run_id for name, sink in self.sinks.items() if sink.run_id}


@dataclass(frozen=True)
class Attempted:
    """Which attempt of which logical trial a run is; for a retry, the identity of the runs its
    dead attempts started, which it continues."""

    logical: int
    attempt: int = 1
    spool_id: str | None = None
    """The logical trial's spool id: MLflow's run is found by it."""
    run_ids: Mapping[str, str] = field(default_factory=dict)
    """Sink name -> run id, for sinks that name their run up front (W&B)."""
    logged_through: int | None = None
    """The last training step the dead attempts logged: the retry's events up to it are
    dropped, since it redoes those steps."""


def start_trial_tracking(
    config: SweepConfig,
    layout: Layout,
    *,
    trial: int,
    experiment_id: str | None,
    parent_run_id: str | None,
    worker: int,
    db_url: str | None,
    store: Any = None,
    attempted: Attempted | None = None,
) -> RunTracking:
    """A sweep trial's telemetry: MLflow child run, W&B run, the store's live summary. A retry
    (``attempted`` with its dead attempt's spool) continues the logical trial's runs: it keeps
    their ids and name, and drops the events of the steps the dead attempt logged already."""
    setup = _setup(
        config,
        layout,
        experiment_id=experiment_id,
        parent_run_id=parent_run_id,
        store=store,
        db_url=db_url,
    )
    attempted = attempted or Attempted(trial)
    name = f"trial-{attempted.logical}" if attempted.attempt > 1 else ""
    info = _run_info(config, trial=trial, worker=worker, run_name=name)
    header = _continued(_header(setup, replace(info, attempt=attempted.attempt)), attempted)
    spool = new_spool_path(layout.spool_dir(config.name), f"trial-{trial}")
    return _start(
        config,
        layout,
        header,
        spool,
        store=store,
        console=False,
        logged_through=attempted.logged_through,
    )


def run_identity(header: Mapping[str, Any]) -> dict[str, Any]:
    """What a retry needs to continue this run: its spool id and the sinks' own run ids."""
    run_ids = {n: spec["run_id"] for n, spec in header["sinks"].items() if "run_id" in spec}
    return {"spool_id": header["spool_id"], "run_ids": run_ids}


def _continued(header: dict[str, Any], attempted: Attempted) -> dict[str, Any]:
    """A retry's header keeps its dead attempts' run identity."""
    if attempted.spool_id is None:
        return header
    sinks = {
        name: {**spec, "run_id": attempted.run_ids[name]}
        if "run_id" in spec and name in attempted.run_ids
        else spec
        for name, spec in header["sinks"].items()
    }
    return {**header, "spool_id": attempted.spool_id, "sinks": sinks}


def start_single_tracking(config: SweepConfig, layout: Layout, *, run_name: str) -> RunTracking:
    """``tunefleet train``: one run in the config's experiment, no parent, a console sink."""
    experiment_id = None
    if config.tracking.mlflow.enabled:
        client = make_client(mlflow_tracking_uri(layout, config))
        experiment_id = _experiment(client, config, layout)
    setup = _setup(config, layout, experiment_id=experiment_id)
    header = _header(setup, _run_info(config, trial=0, worker=0, run_name=run_name))
    spool = new_spool_path(layout.spool_dir(config.name), run_name)
    return _start(config, layout, header, spool, store=None, console=True)


def _setup(config: SweepConfig, layout: Layout, **resolved: Any) -> RunSetup:
    return RunSetup(
        config=config,
        local_dir=layout.wandb_dir,
        mlflow_uri=mlflow_tracking_uri(layout, config),
        **resolved,
    )


def _run_info(config: SweepConfig, *, trial: int, worker: int, run_name: str) -> RunInfo:
    params = flatten(config.model_dump(mode="json", exclude={"search", "tracking", "name"}))
    return RunInfo(
        sweep=config.name,
        trial=trial,
        method=config.train.method,
        params=redact_params(params),
        tags={
            "tunefleet.worker": str(worker),
            "tunefleet.host": socket.gethostname(),
            "tunefleet.pid": str(os.getpid()),
        },
        run_name=run_name,
    )


def _header(setup: RunSetup, info: RunInfo) -> dict[str, Any]:
    return {
        "spool_id": secrets.token_hex(8),
        "created": datetime.now(timezone.utc).isoformat(),
        "run": {
            "sweep": info.sweep,
            "trial": info.trial,
            "method": info.method,
            "params": info.params,
            "tags": info.tags,
            "run_name": info.run_name,
            "attempt": info.attempt,
        },
        "sinks": describe_sinks(setup),
    }


def _start(
    config: SweepConfig,
    layout: Layout,
    header: dict[str, Any],
    spool: Path,
    *,
    store: Any,
    console: bool,
    logged_through: int | None = None,
) -> RunTracking:
    fail_fast_http()
    known = {mlflow_tracking_uri(layout, config)}
    writer = SpoolWriter(spool, header)
    cursors = Cursors(sibling(spool, ".cursors.json"))
    sinks = build_sinks(header, spool, cursors, known_uris=known, store=store)
    if console:
        sinks["console"] = ConsoleSink(sys.stdout)
    bus = TelemetryBus(writer, list(sinks.values()), cursors, logged_through=logged_through)
    callback = TrackingCallback(bus, report_file=EVALUATION)
    every = config.tracking.system_every_s
    monitor = None
    if every > 0:
        monitor = SystemMonitor(emit=bus.emit, every_s=every, step=lambda: callback.step)
        monitor.start()
    return RunTracking(bus, callback, monitor, spool, config.tracking.sink_wait_s, sinks, header)
