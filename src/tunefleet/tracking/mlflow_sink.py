"""MLflow: one parent run per sweep and a nested child run per trial, written through
``MlflowClient`` with explicit run ids (never the fluent API's global active run)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunefleet.redaction import redact_url
from tunefleet.tracking.events import (
    CONTINUED,
    TERMINAL_STATES,
    BestSoFar,
    Checkpoint,
    End,
    Evaluation,
    Event,
    Point,
    RunInfo,
)
from tunefleet.tracking.sinks import RunSetup, SinkSource, register_sink

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

MAX_PARAMS_PER_BATCH = 100
MAX_METRICS_PER_BATCH = 1000
SPOOL_TAG = "tunefleet.spool"
MAX_PARAM_LENGTH = 6000


def make_client(tracking_uri: str) -> MlflowClient:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ImportError(
            "MLflow tracking needs mlflow: pip install mlflow, or set "
            "tracking.mlflow.enabled: false"
        ) from None
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def fail_fast_http() -> None:
    """The bus retries with its own backoff; MLflow's own (7 retries, 120 s timeout) would keep
    a batch in flight for minutes against a dead server. Explicit settings win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def ensure_experiment(client: MlflowClient, name: str, *, artifact_location: str | None) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except Exception:
        # Another worker created it between our lookup and our create.
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(str(k)[:250], str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])


def start_parent_run(
    client: MlflowClient, *, experiment_id: str, sweep: str, params: Mapping[str, Any]
) -> str:
    run = client.create_run(
        experiment_id, run_name=sweep, tags={"tunefleet.sweep": sweep, "tunefleet.role": "sweep"}
    )
    log_params(client, run.info.run_id, params)
    return str(run.info.run_id)


def end_parent_run(client: MlflowClient, run_id: str, *, status: str) -> None:
    """End the sweep's parent run: FINISHED (the budget is spent), FAILED or KILLED."""
    if status not in TERMINAL_STATES:
        raise ValueError(f"status must be one of {TERMINAL_STATES}, got {status!r}")
    client.set_terminated(run_id, status=status)


def reopen_parent_run(client: MlflowClient, run_id: str) -> None:
    """A resumed sweep's parent run is running again (MLflow keeps its last end time until the
    sweep ends anew)."""
    client.update_run(run_id, status="RUNNING")


def start_child_run(
    client: MlflowClient,
    *,
    experiment_id: str,
    parent_run_id: str | None,
    info: RunInfo,
    spool_id: str,
) -> str:
    """The trial's run, created once: a replay in another process finds it by its spool id
    (MLflow picks run ids, so the id cannot be chosen up front)."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{SPOOL_TAG}` = '{spool_id}'", max_results=1
    )
    if found:
        return str(found[0].info.run_id)
    tags = {
        "tunefleet.sweep": info.sweep,
        "tunefleet.trial": str(info.trial),
        "tunefleet.method": info.method,
        "tunefleet.role": "trial",
        SPOOL_TAG: spool_id,
        **info.tags,
    }
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=info.name, tags=tags)
    log_params(client, run.info.run_id, info.params)
    return str(run.info.run_id)


def continue_child_run(client: MlflowClient, run_id: str, *, info: RunInfo) -> None:
    """A retry continues the logical trial's run (found by the spool id it inherits): running
    again, and tagged with the attempt and where it runs now."""
    from mlflow.entities import RunTag

    client.update_run(run_id, status="RUNNING")
    tags = {"tunefleet.attempt": str(info.attempt), "tunefleet.attempt_trial": str(info.trial)}
    tags.update(info.tags)
    client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])


class MlflowSink:
    """A trial's events to its MLflow run, created lazily on the bus thread (a tracker that is
    down at trial start must not hold the trial up).

    Metrics go in ``log_batch`` requests of at most 1,000; the best evaluation's report as
    artifacts under ``evaluation/``; a new best of the sweep to the parent run (a ``best_value``
    metric stepped by the count of the sweep's complete trials, and ``best.*`` tags: params
    cannot change once logged).
    """

    name = "mlflow"

    def __init__(
        self,
        client: MlflowClient,
        *,
        info: RunInfo,
        experiment_id: str,
        parent_run_id: str | None,
        spool_id: str,
        artifacts: Path,
        state: Mapping[str, Any],
    ) -> None:
        fail_fast_http()
        self.client, self.info, self.experiment_id = client, info, experiment_id
        self.parent_run_id, self.spool_id, self.artifacts = parent_run_id, spool_id, artifacts
        self.run_id: str | None = state.get("run_id")

    def _run(self) -> str:
        if self.run_id is None:
            self.run_id = start_child_run(
                self.client,
                experiment_id=self.experiment_id,
                parent_run_id=self.parent_run_id,
                info=self.info,
                spool_id=self.spool_id,
            )
            if self.info.attempt > 1:
                continue_child_run(self.client, self.run_id, info=self.info)
        return self.run_id

    def state(self) -> dict[str, Any]:
        return {"run_id": self.run_id}

    def write(self, events: Sequence[Event]) -> None:
        from mlflow.entities import Metric

        run_id = self._run()
        metrics: list[Metric] = []
        for event in events:
            if isinstance(event, Point):
                metrics.append(Metric(event.key, event.value, event.timestamp_ms, event.step))
                continue
            self._log_metrics(run_id, metrics)
            metrics = []
            self._handle(run_id, event)
        self._log_metrics(run_id, metrics)

    def _log_metrics(self, run_id: str, metrics: Sequence[Any]) -> None:
        for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])

    def _handle(self, run_id: str, event: Event) -> None:
        if isinstance(event, Evaluation):
            from tunefleet.tracking.render import evaluation_artifacts

            files = evaluation_artifacts(event.report, self.artifacts, step=event.step)
            self.client.log_artifacts(run_id, str(files[0].parent), artifact_path="evaluation")
            self.client.set_tag(run_id, "tunefleet.best_step", str(event.step))
        elif isinstance(event, Checkpoint):
            self.client.set_tag(run_id, "tunefleet.checkpoint", event.path)
        elif isinstance(event, BestSoFar):
            self._best_so_far(event)
        elif isinstance(event, End) and event.status != CONTINUED:
            self.client.set_terminated(run_id, status=event.status)

    def _best_so_far(self, event: BestSoFar) -> None:
        from mlflow.entities import Metric, RunTag

        if not self.parent_run_id:
            return
        parent = self.parent_run_id
        self.client.log_batch(
            parent, metrics=[Metric("best_value", event.value, event.timestamp_ms, event.step)]
        )
        # Workers' buses deliver in any order: the tags follow the latest best (MLflow's own
        # order, step then time), so an older best arriving late does not overwrite a newer one.
        history = self.client.get_metric_history(parent, "best_value")
        latest = max(history, key=lambda m: (m.step, m.timestamp))
        if (latest.step, latest.timestamp) != (event.step, event.timestamp_ms):
            return
        tags = [RunTag("tunefleet.best_trial", str(event.trial))]
        tags += [
            RunTag(f"best.{k}"[:250], str(v)[:MAX_PARAM_LENGTH]) for k, v in event.params.items()
        ]
        self.client.log_batch(parent, tags=tags)

    def close(self) -> None:
        """Nothing to release: the client holds no connection of its own."""


def _describe(setup: RunSetup) -> dict[str, Any] | None:
    if not setup.config.tracking.mlflow.enabled or setup.experiment_id is None:
        return None
    return {
        "tracking_uri": redact_url(setup.mlflow_uri),
        "experiment_id": setup.experiment_id,
        "parent_run_id": setup.parent_run_id,
    }


def _build(source: SinkSource) -> MlflowSink | None:
    spec = source.spec
    uri = source.real_uri(spec["tracking_uri"])
    if uri is None:
        log.warning(
            "%s: the MLflow URI %s holds a password this process does not have; set "
            "MLFLOW_TRACKING_URI or pass --config",
            source.spool.name,
            spec["tracking_uri"],
        )
        return None
    return MlflowSink(
        make_client(uri),
        info=source.info,
        experiment_id=spec["experiment_id"],
        parent_run_id=spec["parent_run_id"],
        spool_id=source.spool_id,
        artifacts=source.artifacts,
        state=source.state,
    )


register_sink("mlflow", describe=_describe, build=_build)
