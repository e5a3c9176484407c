"""``promote``: the best trial's verified checkpoint -> MLflow model registry alias + store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunefleet.errors import NotFoundError
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.status import SweepView
from tunefleet.platform.store import Store
from tunefleet.redaction import redact_url
from tunefleet.trainers.checkpoint import verify


@dataclass(frozen=True)
class PromotionOutcome:
    name: str
    number: int
    alias: str
    checkpoint: Path
    model_version: str | None
    model_uri: str | None
    tracking_uri: str | None


def promote(
    view: SweepView, store: Store, layout: Layout, *, trial: int | None, alias: str
) -> PromotionOutcome:
    """Register ``trial`` (default: the best) under ``alias``; CheckpointError if its checkpoint
    changed since it was written, NotFoundError if it has none."""
    name = view.config.name
    if trial is None:
        best = view.best()
        if best is None:
            raise NotFoundError(f"sweep {name!r} has no complete trial to promote")
        trial = best.number
    record = store.trial(name, trial)
    if (
        record is None
        or record.state != "COMPLETE"
        or not record.checkpoint
        or not record.checkpoint_sha256
    ):
        state = record.state if record else "unknown"
        raise NotFoundError(
            f"trial {trial} of {name!r} has no checkpoint to promote (state {state}); "
            "only complete trials keep one"
        )
    folder = Path(record.checkpoint)
    verify(folder, record.checkpoint_sha256)
    version = uri = tracking_uri = None
    if view.config.tracking.mlflow.enabled:
        from tunefleet.platform.model_registry import register_checkpoint

        tracking_uri = mlflow_tracking_uri(layout, view.config)
        registered = register_checkpoint(
            tracking_uri=tracking_uri,
            model_name=name,
            alias=alias,
            checkpoint=folder,
            run_id=record.mlflow_run_id,
            experiment_name=name,
            description=f"tunefleet sweep {name}, trial {trial}: "
            f"{view.config.search.metric} = {record.value}",
        )
        version, uri = registered.version, registered.uri
    store.record_promotion(
        name,
        number=trial,
        alias=alias,
        model_name=name,
        model_version=version,
        checkpoint=str(folder),
    )
    return PromotionOutcome(name, trial, alias, folder, version, uri, tracking_uri)


def describe(promotion: PromotionOutcome) -> str:
    lines = [
        f"promoted {promotion.name} trial {promotion.number} as @{promotion.alias}"
        + (f" (MLflow model version {promotion.model_version})" if promotion.model_version else ""),
        f"  checkpoint: {promotion.checkpoint}",
    ]
    if promotion.model_uri:
        uri = redact_url(promotion.tracking_uri or "")  # printed: its password stays ***
        lines += [
            "load it:",
            f'  MLFLOW_TRACKING_URI={uri} python -c "import mlflow; '
            f"m = mlflow.pyfunc.load_model('{promotion.model_uri}'); "
            "print(m.predict(['great food']))\"",
        ]
    lines.append(f"  tunefleet predict {promotion.name}@{promotion.alias} 'great food'")
    return "\n".join(lines)
