"""``search.space`` -> Optuna suggest calls, define-by-run.

A path under a method's own section (``train.lora.r``) is suggested only when that method is the
trial's, so a trial's recorded params show only what it used.
"""

from __future__ import annotations

import json
from typing import Any

import optuna

from tunefleet.config import Dimension, SweepConfig, method_of_path
from tunefleet.dotted import leaf_annotation

_PRIMITIVES = (str, int, float, bool, type(None))


def _ordered(space: dict[str, Dimension]) -> list[tuple[str, Dimension]]:
    # The method is drawn first: whether its own sub-space is sampled depends on it.
    return sorted(space.items(), key=lambda item: item[0] != "train.method")


def suggest_params(trial: optuna.Trial, config: SweepConfig) -> dict[str, Any]:
    """Ask ``trial`` for a value of every searched path that applies; returns {path: value}."""
    params: dict[str, Any] = {}
    for path, dim in _ordered(config.search.space):
        owner = method_of_path(path)
        method = params.get("train.method", config.train.method)
        if owner is not None and owner != method:
            continue
        params[path] = suggest(trial, path, dim)
    return params


def suggest(trial: optuna.Trial, path: str, dim: Dimension) -> Any:
    if dim.choices is not None:
        if all(isinstance(c, _PRIMITIVES) for c in dim.choices):
            return trial.suggest_categorical(path, dim.choices)
        # Optuna stores only primitive choices; lists (target_modules) travel as JSON text.
        encoded = [json.dumps(c) for c in dim.choices]
        return json.loads(trial.suggest_categorical(path, encoded))
    assert dim.low is not None and dim.high is not None
    if leaf_annotation(SweepConfig, path) is int:
        return trial.suggest_int(
            path, int(dim.low), int(dim.high), log=dim.log, step=int(dim.step or 1)
        )
    return trial.suggest_float(path, dim.low, dim.high, log=dim.log, step=dim.step)


def grid(config: SweepConfig) -> dict[str, list[Any]]:
    """The grid sampler's search space; ValueError names a dimension that has no finite grid."""
    out: dict[str, list[Any]] = {}
    for path, dim in config.search.space.items():
        if dim.choices is not None:
            primitive = all(isinstance(c, _PRIMITIVES) for c in dim.choices)
            out[path] = list(dim.choices) if primitive else [json.dumps(c) for c in dim.choices]
            continue
        assert dim.low is not None and dim.high is not None
        integer = leaf_annotation(SweepConfig, path) is int
        if dim.step is None and not integer:
            raise ValueError(
                f"search.space.{path}: the grid sampler needs `choices` or a `step` "
                f"for a float range ({dim.low}..{dim.high})"
            )
        step = dim.step or 1
        count = round((dim.high - dim.low) / step) + 1
        values = [dim.low + i * step for i in range(count)]
        out[path] = [int(v) for v in values] if integer else values
    return out
