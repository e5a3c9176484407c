"""Wiring the tracking sinks for a sweep and its trials from ``tracking:``."""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass, field

from tunefleet.config import SweepConfig, flatten
from tunefleet.platform.layout import Layout
from tunefleet.tracking.bus import TelemetryBus
from tunefleet.tracking.events import RunInfo
from tunefleet.tracking.mlflow_sink import (
    MlflowSink,
    default_tracking_uri,
    ensure_experiment,
    make_client,
    start_child_run,
    start_parent_run,
)
from tunefleet.tracking.sinks import Sink
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
    uri = mlflow_uri(config, layout)
    client = make_client(uri)
    # A local store keeps its artifacts beside it; a server decides for itself.
    artifacts = layout.mlflow_artifacts.as_uri() if uri.startswith("sqlite") else None
    experiment_id = ensure_experiment(client, config.name, artifact_location=artifacts)
    params = flatten(config.model_dump(mode="json", exclude={"search": {"space"}}))
    return experiment_id, start_parent_run(
        client, experiment_id=experiment_id, sweep=config.name, params=params
    )


@dataclass
class TrialTracking:
    """A trial's bus and the run ids its sinks write to."""

    bus: TelemetryBus
    mlflow_run_id: str | None = None
    wandb_run_id: str | None = None
    sinks: list[Sink] = field(default_factory=list)


def start_trial_tracking(
    config: SweepConfig,
    layout: Layout,
    *,
    trial: int,
    experiment_id: str | None,
    parent_run_id: str | None,
    worker: int,
) -> TrialTracking:
    info = RunInfo(
        sweep=config.name,
        trial=trial,
        method=config.train.method,
        params=flatten(config.model_dump(mode="json", exclude={"search", "tracking", "name"})),
    )
    sinks: list[Sink] = []
    mlflow_run_id = wandb_run_id = None
    if config.tracking.mlflow.enabled and experiment_id is not None:
        try:
            client = make_client(mlflow_uri(config, layout))
            mlflow_run_id = start_child_run(
                client,
                experiment_id=experiment_id,
                parent_run_id=parent_run_id,
                info=info,
                tags={
                    "tunefleet.worker": str(worker),
                    "tunefleet.host": socket.gethostname(),
                    "tunefleet.pid": str(os.getpid()),
                },
            )
            sinks.append(MlflowSink(client, mlflow_run_id))
        except Exception:
            # A tracker that is down must not cost the trial; its points are simply not sent.
            log.warning("MLflow is unreachable; trial %d runs without it", trial, exc_info=True)
    if config.tracking.wandb.enabled:
        wandb = config.tracking.wandb
        wandb_run_id = new_run_id()
        sinks.append(
            WandbSink(
                info=info,
                run_id=wandb_run_id,
                project=wandb.project,
                entity=wandb.entity,
                mode=wandb.mode,
                directory=layout.wandb_dir,
            )
        )
    return TrialTracking(TelemetryBus(sinks), mlflow_run_id, wandb_run_id, sinks)
