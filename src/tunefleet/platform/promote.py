"""``promote``: the best trial's verified checkpoint -> MLflow model registry alias + store.

By default (:func:`promote_gated`) the candidate becomes ``@challenger`` and moves to
``@champion`` only through the gate of ``promotion:`` (``platform.gate``), scored on the frozen
test set; :func:`promote` is the plain registration under a named alias (``--alias``).

A multi-objective sweep has a front, not one best: the user names the trial (``--trial N``) or
the objective to prefer among the front (``--prefer METRIC``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tunefleet.errors import NotFoundError, TunefleetError
from tunefleet.platform.gate import GateResult, describe_gate, run_gate
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.platform.pareto import Front, preferred
from tunefleet.platform.status import SweepView
from tunefleet.platform.store import Store, TrialRecord
from tunefleet.redaction import redact_url
from tunefleet.trainers.checkpoint import verify

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from tunefleet.config.schema import PromotionConfig
    from tunefleet.platform.scoring import Scores
    from tunefleet.trainers.data import Table


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
    from tunefleet.platform.versions import RESERVED_ALIASES

    name = view.config.name
    if alias in RESERVED_ALIASES:
        raise TunefleetError(
            f"--alias {alias}: {', '.join(RESERVED_ALIASES)} move only through the gate "
            "(`tunefleet promote NAME` without --alias, or with --force --reason TEXT) and "
            "`tunefleet rollback`; choose another alias"
        )
    trial, note = choose_trial(view, trial=trial, prefer=prefer)
    record, folder = _candidate(store, name, trial)
    version = uri = tracking_uri = None
    if view.config.tracking.mlflow.enabled:
        tracking_uri = mlflow_tracking_uri(layout, view.config)
        version, uri = _register(view, store, tracking_uri, record, folder, alias=alias)
    else:
        _record(store, name, record.number, alias, None, folder)
    return PromotionOutcome(name, trial, alias, folder, version, uri, tracking_uri, note)


def _register(
    view: SweepView,
    store: Store,
    tracking_uri: str,
    record: TrialRecord,
    folder: Path,
    *,
    alias: str,
) -> tuple[str, str]:
    """Register ``folder`` (trial ``record``) as a new version under ``alias``, and record the
    move in the alias history and the promotion in the store; its version and model URI."""
    from tunefleet.platform.model_registry import register_checkpoint
    from tunefleet.platform.versions import actor, alias_version, client_for

    name, number = view.config.name, record.number
    before = _number(alias_version(client_for(tracking_uri), name, alias))
    registered = register_checkpoint(
        tracking_uri=tracking_uri,
        model_name=name,
        alias=alias,
        checkpoint=folder,
        run_id=record.mlflow_run_id,
        experiment_name=name,
        description=f"tunefleet sweep {name}, trial {number}: {_values_text(view, number)}",
        sha256=record.checkpoint_sha256,
    )
    store.record_alias_move(
        model_name=name,
        alias=alias,
        action="register",
        from_version=before,
        to_version=registered.version,
        actor=actor(),
        sweep=name,
        number=number,
    )
    _record(store, name, number, alias, registered.version, folder)
    return registered.version, registered.uri


def _record(
    store: Store, name: str, number: int, alias: str, version: str | None, folder: Path
) -> None:
    store.record_promotion(
        name,
        number=number,
        alias=alias,
        model_name=name,
        model_version=version,
        checkpoint=str(folder),
    )


def _candidate(store: Store, name: str, trial: int) -> tuple[TrialRecord, Path]:
    """Trial ``trial``'s record and checkpoint folder, checked against its recorded hashes;
    NotFoundError if it has no checkpoint, CheckpointError if it changed since it was written."""
    record = store.trial(name, trial)
    if (
        record is None
        or record.state != "COMPLETE"
        or not record.checkpoint
        or not record.checkpoint_sha256
        or record.checkpoint_removed
    ):
        state = record.state if record else "unknown"
        removed = record.checkpoint_removed if record else None
        if removed:
            state += f"; retention deleted its checkpoint: {removed}"
        raise NotFoundError(
            f"trial {trial} of {name!r} has no checkpoint to promote (state {state}); "
            "only complete trials keep one"
        )
    folder = Path(record.checkpoint)
    verify(folder, record.checkpoint_sha256)
    return record, folder


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


# --------------------------------------------------------------------------------------------
# Gated promotion: challenger -> gate -> champion


@dataclass(frozen=True)
class GatedOutcome:
    """A candidate registered as ``@challenger`` and put through the gate."""

    name: str
    number: int
    version: str
    """The challenger's model version."""
    champion_before: str | None
    moved: bool
    """``@champion`` now names ``version`` (the gate passed, or ``--force``)."""
    forced: bool
    """Moved although the gate failed."""
    reason: str | None
    gate: GateResult
    test_source: str
    tracking_uri: str
    note: str | None = None


def promote_gated(
    view: SweepView,
    store: Store,
    layout: Layout,
    *,
    trial: int | None,
    prefer: str | None = None,
    test: Path | None = None,
    force_reason: str | None = None,
) -> GatedOutcome:
    """Register the candidate as ``@challenger``, score it and ``@champion`` on the same frozen
    test set, and move ``@champion`` (the former one keeping ``@previous-champion``) only if
    every check of ``promotion:`` holds, or ``force_reason`` is given. Every alias move, and a
    failed gate, goes to the store's alias history."""
    from tunefleet.platform.versions import (
        CHALLENGER,
        CHAMPION,
        actor,
        alias_version,
        client_for,
        version_of,
    )

    config = view.config
    name = config.name
    number, note = choose_trial(view, trial=trial, prefer=prefer)
    record, folder = _candidate(store, name, number)
    if not config.tracking.mlflow.enabled:
        raise TunefleetError(
            f"sweep {name!r} has tracking.mlflow.enabled: false; the gate moves registry "
            "aliases, so it needs the MLflow registry (or pass --alias ALIAS for a plain "
            "registration under another alias)"
        )
    table, source = frozen_test_set(folder, test)
    tracking_uri = mlflow_tracking_uri(layout, config)
    client, who = client_for(tracking_uri), actor()
    version, _uri = _register(view, store, tracking_uri, record, folder, alias=CHALLENGER)
    champion = alias_version(client, name, CHAMPION)
    challenger = version_of(client, name, version)
    result = run_gate(
        config.promotion,
        challenger=_score(tracking_uri, challenger, table, config.promotion),
        champion=None
        if champion is None
        else _score(tracking_uri, champion, table, config.promotion),
    )
    outcome = GatedOutcome(
        name=name,
        number=number,
        version=version,
        champion_before=_number(champion),
        moved=result.passed or force_reason is not None,
        forced=not result.passed and force_reason is not None,
        reason=force_reason,
        gate=result,
        test_source=source,
        tracking_uri=tracking_uri,
        note=note,
    )
    _settle(client, store, outcome, who=who, folder=folder)
    return outcome


def _settle(
    client: MlflowClient, store: Store, outcome: GatedOutcome, *, who: str, folder: Path
) -> None:
    """Move the aliases the gate's verdict allows (none when it failed) and record it."""
    from tunefleet.platform.versions import CHAMPION, PREVIOUS, Move, alias_version, move_aliases

    name, version, before = outcome.name, outcome.version, outcome.champion_before
    gate = {**outcome.gate.to_json(), "test": outcome.test_source}
    verdict = "forced" if outcome.forced else "passed" if outcome.moved else "failed"
    client.set_model_version_tag(name, version, "tunefleet.gate", verdict)
    if not outcome.moved:
        store.record_alias_move(
            model_name=name,
            alias=CHAMPION,
            action="gate-failed",
            from_version=before,
            to_version=version,
            actor=who,
            sweep=name,
            number=outcome.number,
            reason=outcome.reason,
            gate=gate,
        )
        return
    action = "force" if outcome.forced else "promote"
    moves = [Move(CHAMPION, action, before, version)]
    if before is not None:
        moves.append(Move(PREVIOUS, action, _number(alias_version(client, name, PREVIOUS)), before))
    move_aliases(
        client,
        store,
        name,
        moves,
        who=who,
        sweep=name,
        number=outcome.number,
        reason=outcome.reason,
        gate=gate,
    )
    _record(store, name, outcome.number, CHAMPION, version, folder)


def frozen_test_set(checkpoint: Path, test: Path | None) -> tuple[Table, str]:
    """The frozen test set and where it came from: ``test`` when given, else the held-out test
    split of the data the checkpoint's trial trained on (never its eval split, which chose it).

    The split is rebuilt from the trial's own ``data`` settings and must fingerprint as it did
    when the trial trained, or the rows held out then may since have been trained on."""
    from pydantic import ValidationError

    from tunefleet.config.schema import DataConfig
    from tunefleet.trainers.checkpoint import Manifest
    from tunefleet.trainers.data import load_splits, read_table

    manifest = Manifest.read(checkpoint)
    try:
        data = DataConfig.model_validate(manifest.config["data"])
    except (KeyError, ValidationError) as exc:
        raise TunefleetError(
            f"checkpoint {checkpoint} does not record the data settings its trial trained on "
            f"({type(exc).__name__}), so its test split cannot be rebuilt: pass --test FILE"
        ) from None
    if test is not None:
        table = read_table(
            test, key="--test", text_column=data.text_column, label_column=data.label_column
        )
        return table, f"--test {test} ({len(table)} rows)"
    splits = load_splits(data)
    if splits.test is None:
        raise TunefleetError(
            f"sweep {manifest.sweep!r} has no held-out test split to gate on (data.test is "
            "null and data.test_fraction is 0): pass --test FILE, or set data.test or "
            "data.test_fraction in the sweep's config for its next trials; the eval split "
            "chose the trial, so it cannot judge it"
        )
    if splits.fingerprint() != manifest.data_sha256:
        raise TunefleetError(
            f"the data of trial {manifest.trial} ({data.train}) changed since it trained: its "
            "held-out test split is no longer the one it never saw; pass --test FILE"
        )
    where = data.test if data.test else f"data.test_fraction {data.test_fraction} of {data.train}"
    return splits.test, f"data.test {where} ({len(splits.test)} rows)"


def _score(
    tracking_uri: str, version: ModelVersion, table: Table, settings: PromotionConfig
) -> Scores:
    from tunefleet.platform.scoring import MIN_TIMED_BATCHES, score_predictor
    from tunefleet.platform.versions import downloaded, load_copy

    # Repeated timing passes cost more than the rest of the gate on a small test set: only
    # when a latency budget is checked (one pass still gives the figure for the report).
    timed = MIN_TIMED_BATCHES if settings.max_p95_latency_ms is not None else 1
    with downloaded(tracking_uri, version) as copy:
        return score_predictor(
            load_copy(copy),
            table,
            batch_size=settings.batch_size,
            model_mb=copy.size_mb,
            min_timed_batches=timed,
        )


def _number(version: ModelVersion | None) -> str | None:
    # The sqlite store gives the version as an int, the REST store as a str.
    return None if version is None else str(version.version)


def describe_gated(outcome: GatedOutcome) -> str:
    name, version = outcome.name, outcome.version
    lines = [
        f"registered {name} trial {outcome.number} as version {version} @challenger",
        f"  test set: {outcome.test_source}",
    ]
    if outcome.note:
        lines.append(outcome.note)
    lines.append(describe_gate(outcome.gate))
    before = f"version {outcome.champion_before}" if outcome.champion_before else "none"
    if outcome.forced:
        lines.append(
            f"FORCED over the failed gate ({outcome.reason}): @champion -> version {version} "
            f"(was {before})"
        )
    elif outcome.moved:
        lines.append(f"@champion -> version {version} (was {before})")
    else:
        failed = ", ".join(c.name for c in outcome.gate.failed)
        lines.append(f"@champion stays {before}: failed {failed}")
    if outcome.moved:
        uri = redact_url(outcome.tracking_uri)  # printed: its password stays ***
        lines += [
            "load it:",
            f'  MLFLOW_TRACKING_URI={uri} python -c "import mlflow; '
            f"m = mlflow.pyfunc.load_model('models:/{name}@champion'); "
            "print(m.predict(['great food']))\"",
        ]
    return "\n".join(lines)
