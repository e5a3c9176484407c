"""Studies, samplers and pruners, built from ``search:``."""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage

from tunefleet.config import SweepConfig
from tunefleet.search.space import grid

HEARTBEAT_SECONDS = 20
"""Running trials beat this often; one silent for ``GRACE_SECONDS`` is failed (optuna#3215)."""
GRACE_SECONDS = 120


class AskTellGridSampler(optuna.samplers.GridSampler):
    """GridSampler for ask/tell workers: Optuna's calls ``study.stop()`` once the grid is used
    up, which raises outside ``optimize`` and leaves the last trial RUNNING. The budget is capped
    at the grid's size instead (``grid_size``)."""

    def after_trial(
        self,
        study: optuna.Study,
        trial: optuna.trial.FrozenTrial,
        state: optuna.trial.TrialState,
        values: Sequence[float] | None,
    ) -> None:
        return None


def grid_size(config: SweepConfig) -> int | None:
    """Points in the grid (an upper bound when method sub-spaces are conditional), or None."""
    if config.search.sampler != "grid":
        return None
    return math.prod(len(values) for values in grid(config).values())


def make_sampler(config: SweepConfig, *, worker: int = 0) -> BaseSampler:
    """The sampler named by ``search.sampler``; workers get distinct seeds so that random-based
    samplers do not propose the same point on every worker."""
    search = config.search
    seed = search.seed + worker
    if search.sampler == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed,
            multivariate=True,
            group=True,
            constant_liar=True,
            n_startup_trials=min(10, max(2, search.trials // 3)),
        )
    if search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if search.sampler == "grid":
        return AskTellGridSampler(grid(config), seed=seed)
    if search.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise ValueError(f"unknown sampler {search.sampler!r}")


def make_pruner(config: SweepConfig) -> BasePruner:
    search = config.search
    if search.pruner == "none":
        return optuna.pruners.NopPruner()
    if search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.train.epochs)
    raise ValueError(f"unknown pruner {search.pruner!r}")


def make_storage(url: str) -> RDBStorage:
    """Optuna's storage with heartbeats on, and SQLite waiting out its lock (optuna#820)."""
    engine_kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    return RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=HEARTBEAT_SECONDS,
        grace_period=GRACE_SECONDS,
    )


def open_study(
    config: SweepConfig, *, storage: RDBStorage, worker: int = 0, create: bool = False
) -> optuna.Study:
    sampler, pruner = make_sampler(config, worker=worker), make_pruner(config)
    if create:
        return optuna.create_study(
            study_name=config.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=config.search.direction,
            load_if_exists=True,
        )
    return optuna.load_study(
        study_name=config.name, storage=storage, sampler=sampler, pruner=pruner
    )
