"""MLflow: one parent run per sweep and a nested child run per trial, written through
``MlflowClient`` with explicit run ids (never the fluent API's global active run)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunefleet.tracking.events import Point, RunInfo

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

MAX_PARAMS_PER_BATCH = 100
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


def default_tracking_uri(out: Path) -> str:
    return f"sqlite:///{(out / 'mlflow.db').resolve()}"


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


def start_child_run(
    client: MlflowClient,
    *,
    experiment_id: str,
    parent_run_id: str | None,
    info: RunInfo,
    tags: Mapping[str, str],
) -> str:
    all_tags = {
        "tunefleet.sweep": info.sweep,
        "tunefleet.trial": str(info.trial),
        "tunefleet.method": info.method,
        "tunefleet.role": "trial",
        **tags,
    }
    if parent_run_id:
        all_tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(experiment_id, run_name=f"trial-{info.trial}", tags=all_tags)
    log_params(client, run.info.run_id, info.params)
    return str(run.info.run_id)


class MlflowSink:
    """Metric batches to one run (``log_batch`` takes at most 1,000 metrics a request)."""

    name = "mlflow"

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def write(self, points: Sequence[Point]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(p.key, p.value, p.timestamp_ms, p.step) for p in points]
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def finish(self, *, status: str) -> None:
        self.client.set_terminated(self.run_id, status=status)
