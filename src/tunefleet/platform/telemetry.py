"""Wiring a run's telemetry from ``tracking:``: its spool, its sinks, its bus, its monitor.

A spool's header describes its sinks (tracker URIs with passwords redacted, experiment and
parent run, W&B project and run id), so that ``tunefleet sync`` rebuilds the same sinks in
another process from the header alone, plus the real URIs the caller knows.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tunefleet.config import SweepConfig, flatten
from tunefleet.platform.layout import Layout
from tunefleet.redaction import REDACTED, redact_params, redact_url
from tunefleet.tracking.bus import TelemetryBus
from tunefleet.tracking.callback import TrackingCallback
from tunefleet.tracking.console_sink import ConsoleSink
from tunefleet.tracking.events import BestSoFar, RunInfo
from tunefleet.tracking.mlflow_sink import (
    MlflowSink,
    default_tracking_uri,
    ensure_experiment,
    fail_fast_http,
    make_client,
    start_parent_run,
)
from tunefleet.tracking.sinks import Sink
from tunefleet.tracking.spool import Cursors, SpoolWriter, new_spool_path, sibling
from tunefleet.tracking.system import SystemMonitor
from tunefleet.tracking.wandb_sink import WandbSink, new_run_id

log = logging.getLogger(__name__)


def mlflow_uri(config: SweepConfig, layout: Layout) -> str:
    """The config's URI, else ``MLFLOW_TRACKING_URI`` (as MLflow users expect), else the
    embedded default: a sqlite file in ``--out``."""
    configured = config.tracking.mlflow.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return configured or default_tracking_uri(layout.out)


def start_sweep_tracking(config: SweepConfig, layout: Layout) -> tuple[str, str] | None:
    """(experiment id, parent run id) of a new sweep's MLflow parent run, or None if disabled."""
    if not config.tracking.mlflow.enabled:
        return None
    client = make_client(mlflow_uri(config, layout))
    experiment_id = _experiment(client, config, layout)
    params = redact_params(flatten(config.model_dump(mode="json", exclude={"search": {"space"}})))
    return experiment_id, start_parent_run(
        client, experiment_id=experiment_id, sweep=config.name, params=params
    )


def _experiment(client: Any, config: SweepConfig, layout: Layout) -> str:
    # A local store keeps its artifacts beside it; a server decides for itself.
    uri = mlflow_uri(config, layout)
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

    @property
    def mlflow_run_id(self) -> str | None:
        sink = self.sinks.get("mlflow")
        return sink.run_id if isinstance(sink, MlflowSink) else None

    @property
    def wandb_run_id(self) -> str | None:
        sink = self.sinks.get("wandb")
        return sink.run_id if isinstance(sink, WandbSink) else None


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
) -> RunTracking:
    """A sweep trial's telemetry: MLflow child run, W&B run, the store's live summary."""
    info = _run_info(config, trial=trial, worker=worker, run_name="")
    header = _header(config, layout, info, experiment_id=experiment_id, parent_run_id=parent_run_id)
    if db_url is not None and store is not None:
        header["sinks"]["store"] = {"db_url": redact_url(db_url)}
    spool = new_spool_path(layout.spool_dir(config.name), f"trial-{trial}")
    return _start(config, layout, header, spool, store=store, console=False)


def start_single_tracking(config: SweepConfig, layout: Layout, *, run_name: str) -> RunTracking:
    """``tunefleet train``: one run in the config's experiment, no parent, a console sink."""
    experiment_id = None
    if config.tracking.mlflow.enabled:
        experiment_id = _experiment(make_client(mlflow_uri(config, layout)), config, layout)
    info = _run_info(config, trial=0, worker=0, run_name=run_name)
    header = _header(config, layout, info, experiment_id=experiment_id, parent_run_id=None)
    spool = new_spool_path(layout.spool_dir(config.name), run_name)
    return _start(config, layout, header, spool, store=None, console=True)


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


def _header(
    config: SweepConfig,
    layout: Layout,
    info: RunInfo,
    *,
    experiment_id: str | None,
    parent_run_id: str | None,
) -> dict[str, Any]:
    sinks: dict[str, Any] = {}
    if config.tracking.mlflow.enabled and experiment_id is not None:
        sinks["mlflow"] = {
            "tracking_uri": redact_url(mlflow_uri(config, layout)),
            "experiment_id": experiment_id,
            "parent_run_id": parent_run_id,
        }
    wandb = config.tracking.wandb
    if wandb.enabled:
        sinks["wandb"] = {
            "run_id": new_run_id(),
            "project": wandb.project,
            "entity": wandb.entity,
            "mode": wandb.mode,
            "directory": str(layout.wandb_dir),
        }
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
        },
        "sinks": sinks,
    }


def _start(
    config: SweepConfig,
    layout: Layout,
    header: dict[str, Any],
    spool: Path,
    *,
    store: Any,
    console: bool,
) -> RunTracking:
    fail_fast_http()
    known = {mlflow_uri(config, layout)}
    writer = SpoolWriter(spool, header)
    cursors = Cursors(sibling(spool, ".cursors.json"))
    sinks = build_sinks(header, spool, cursors, known_uris=known, store=store)
    if console:
        sinks["console"] = ConsoleSink(sys.stdout)
    bus = TelemetryBus(writer, list(sinks.values()), cursors)
    callback = TrackingCallback(bus)
    every = config.tracking.system_every_s
    monitor = None
    if every > 0:
        monitor = SystemMonitor(emit=bus.emit, every_s=every, step=lambda: callback.step)
        monitor.start()
    return RunTracking(bus, callback, monitor, spool, config.tracking.sink_wait_s, sinks)


def real_value(redacted: str, known: Collection[str | None]) -> str | None:
    """The known value whose redacted form is ``redacted``; a value with nothing redacted is
    itself; None when its secret is not known here."""
    if REDACTED not in redacted:
        return redacted
    return next((k for k in known if k is not None and redact_url(k) == redacted), None)


def build_sinks(
    header: Mapping[str, Any],
    spool: Path,
    cursors: Cursors,
    *,
    known_uris: Collection[str | None],
    store: Any,
) -> dict[str, Sink]:
    """The sinks a spool's header names, each continuing from its saved state. A sink whose
    tracker URI holds a secret this process does not know is left out (with a warning)."""
    run = header["run"]
    info = RunInfo(
        sweep=run["sweep"],
        trial=run["trial"],
        method=run["method"],
        params=run["params"],
        tags=run["tags"],
        run_name=run["run_name"],
    )
    artifacts = sibling(spool, ".artifacts")
    specs = header["sinks"]
    sinks: dict[str, Sink] = {}
    if "mlflow" in specs:
        spec = specs["mlflow"]
        uri = real_value(spec["tracking_uri"], known_uris)
        if uri is None:
            log.warning(
                "%s: the MLflow URI %s holds a password this process does not have; set "
                "MLFLOW_TRACKING_URI or pass --config",
                spool.name,
                spec["tracking_uri"],
            )
        else:
            sinks["mlflow"] = MlflowSink(
                make_client(uri),
                info=info,
                experiment_id=spec["experiment_id"],
                parent_run_id=spec["parent_run_id"],
                spool_id=header["spool_id"],
                artifacts=artifacts,
                state=cursors.state("mlflow"),
            )
    if "wandb" in specs:
        spec = specs["wandb"]
        sinks["wandb"] = WandbSink(
            info=info,
            run_id=spec["run_id"],
            project=spec["project"],
            entity=spec["entity"],
            mode=spec["mode"],
            directory=Path(spec["directory"]),
            artifacts=artifacts,
            state=cursors.state("wandb"),
        )
    if "store" in specs and store is not None:
        from tunefleet.platform.store_sink import StoreSink

        sinks["store"] = StoreSink(
            store, sweep=info.sweep, trial=info.trial, state=cursors.state("store")
        )
    return sinks
