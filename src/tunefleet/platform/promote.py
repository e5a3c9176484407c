"""``promote``: the best trial's verified checkpoint -> MLflow model registry alias + store.

A multi-objective sweep has a front, not one best: the user names the trial (``--trial N``) or
the objective to prefer among the front (``--prefer METRIC``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunefleet.errors import NotFoundError, TunefleetError
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.pareto import Front, preferred
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
    note: str | None = None
    """How a multi-objective sweep's trial was chosen, or that it is not on the front."""


def promote(
    view: SweepView,
    store: Store,
    layout: Layout,
    *,
    trial: int | None,
    alias: str,
    prefer: str | None = None,
) -> PromotionOutcome:
    """Register ``trial`` (default: the best; in a multi-objective sweep, the front member best
    in ``prefer``) under ``alias``; CheckpointError if its checkpoint changed since it was
    written, NotFoundError if it has none."""
    name = view.config.name
    trial, note = choose_trial(view, trial=trial, prefer=prefer)
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
            description=f"tunefleet sweep {name}, trial {trial}: {_values_text(view, trial)}",
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
    return PromotionOutcome(name, trial, alias, folder, version, uri, tracking_uri, note)


def choose_trial(
    view: SweepView, *, trial: int | None, prefer: str | None
) -> tuple[int, str | None]:
    """The trial to promote and a note on the choice; TunefleetError (exit 2) naming what to
    pass when a multi-objective sweep's choice is left open or ``prefer`` is no objective."""
    name = view.config.name
    if not view.multi_objective:
        if prefer is not None:
            raise TunefleetError(
                f"--prefer chooses among the Pareto front of a multi-objective sweep; {name!r} "
                f"has one objective ({view.config.search.metric}): promote takes its best "
                "trial, or pass --trial N"
            )
        if trial is None:
            best = view.best()
            if best is None:
                raise NotFoundError(f"sweep {name!r} has no complete trial to promote")
            trial = best.number
        return trial, None
    if trial is not None and prefer is not None:
        raise TunefleetError("pass either --trial N or --prefer METRIC, not both")
    front = view.front()
    if trial is not None:
        return trial, _off_front_note(front, trial)
    if not front.members:
        raise NotFoundError(
            f"sweep {name!r} has no feasible complete trial: its Pareto front is empty"
        )
    if prefer is None:
        raise TunefleetError(
            f"sweep {name!r} has {len(front.objectives)} objectives and a front of "
            f"{len(front.members)} trial(s), not one best: choose with --trial N, or with "
            f"--prefer METRIC (one of {_metrics(front)}) for the front member best in it.\n"
            + _front_listing(front)
        )
    try:
        chosen = preferred(front, prefer)
    except ValueError as exc:
        raise TunefleetError(f"--prefer {prefer}: {exc}") from None
    return chosen, f"chosen by --prefer {prefer} among the Pareto front:\n{_front_listing(front)}"


def _metrics(front: Front) -> str:
    return ", ".join(o.metric for o in front.objectives)


def _front_listing(front: Front) -> str:
    return "\n".join(f"  trial {n}: {_pairs(front, n)}" for n in front.members)


def _pairs(front: Front, number: int) -> str:
    pairs = zip(front.objectives, front.values[number], strict=True)
    return ", ".join(f"{o.metric}={v:.6g}" for o, v in pairs)


def _off_front_note(front: Front, trial: int) -> str | None:
    """Says when ``trial`` is not on the front (its state is checked with its checkpoint)."""
    if front.on_front(trial) or trial not in front.values:
        return None
    why = "it broke a constraint" if trial in front.infeasible else "another trial dominates it"
    return f"note: trial {trial} is not on the Pareto front ({why}); the front:\n" + (
        _front_listing(front) or "  (empty)"
    )


def _values_text(view: SweepView, trial: int) -> str:
    if not view.multi_objective:
        record = view.records.get(trial)
        return f"{view.config.search.metric} = {record.value if record else None}"
    front = view.front()
    return _pairs(front, trial) if trial in front.values else ""


def describe(promotion: PromotionOutcome) -> str:
    lines = [
        f"promoted {promotion.name} trial {promotion.number} as @{promotion.alias}"
        + (f" (MLflow model version {promotion.model_version})" if promotion.model_version else ""),
        f"  checkpoint: {promotion.checkpoint}",
    ]
    if promotion.note:
        lines.append(promotion.note)
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
