"""Studies, samplers and pruners, built from ``search:``.

Samplers and pruners are registries: adding one is an entry in ``SAMPLERS`` or ``PRUNERS`` and
its name in the config's ``Sampler`` or ``Pruner`` literal (a test keeps the two equal).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TypeVar

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage

from tunefleet.config import SweepConfig
from tunefleet.search.liveness import GRACE_SECONDS, HEARTBEAT_SECONDS, fail_trial
from tunefleet.search.space import grid

SamplerFactory = Callable[[SweepConfig, int], BaseSampler]
"""(config, seed) -> a sampler; the seed is ``search.seed`` plus the worker's index."""
PrunerFactory = Callable[[SweepConfig], BasePruner]
_Factory = TypeVar("_Factory")


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


def _tpe(config: SweepConfig, seed: int) -> BaseSampler:
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        constant_liar=True,
        n_startup_trials=min(10, max(2, config.search.trials // 3)),
    )


def _random(config: SweepConfig, seed: int) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def _grid(config: SweepConfig, seed: int) -> BaseSampler:
    return AskTellGridSampler(grid(config), seed=seed)


def _cmaes(config: SweepConfig, seed: int) -> BaseSampler:
    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


def _nsga2(config: SweepConfig, seed: int) -> BaseSampler:
    # A population of a tenth of the budget (at least 4): the default 50 would leave a small
    # sweep's whole budget in the random first generation.
    return optuna.samplers.NSGAIISampler(
        seed=seed, population_size=max(4, min(50, config.search.trials // 10))
    )


SAMPLERS: Mapping[str, SamplerFactory] = {
    "tpe": _tpe,
    "random": _random,
    "grid": _grid,
    "cmaes": _cmaes,
    "nsga2": _nsga2,
}
"""``search.sampler`` name -> factory."""


def _no_pruner(config: SweepConfig) -> BasePruner:
    return optuna.pruners.NopPruner()


def _median(config: SweepConfig) -> BasePruner:
    pruning = config.search.pruning
    return optuna.pruners.MedianPruner(
        n_startup_trials=pruning.startup_trials, n_warmup_steps=pruning.warmup
    )


class FirstRung(BasePruner):
    """A rung-based pruner whose first rung, unless ``search.pruning.min_resource`` sets it, is
    the study's first evaluation: the resource every trial reports first. (Optuna's ``"auto"``
    waits for a trial to complete and takes a hundredth of its steps, which at a few
    evaluations per trial means no rung is ever reached before the last one.)"""

    def __init__(self, build: Callable[[int], BasePruner], min_resource: int | None) -> None:
        self._build = build
        self._inner = build(min_resource) if min_resource is not None else None

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        if self._inner is None:
            first = [
                min(t.intermediate_values)
                for t in study.get_trials(deepcopy=False)
                if t.intermediate_values
            ]
            if not first:
                return False
            self._inner = self._build(min(first))
        return self._inner.prune(study, trial)


def _asha(config: SweepConfig) -> BasePruner:
    pruning = config.search.pruning
    return FirstRung(
        lambda first: optuna.pruners.SuccessiveHalvingPruner(
            min_resource=first,
            reduction_factor=pruning.reduction_factor,
            min_early_stopping_rate=pruning.early_stopping_rate,
        ),
        pruning.min_resource,
    )


def _hyperband(config: SweepConfig) -> BasePruner:
    pruning = config.search.pruning
    return FirstRung(
        lambda first: optuna.pruners.HyperbandPruner(
            min_resource=first, max_resource="auto", reduction_factor=pruning.reduction_factor
        ),
        pruning.min_resource,
    )


def _patient(config: SweepConfig) -> BasePruner:
    pruning = config.search.pruning
    wrapped = PRUNERS[pruning.wrapped](config)
    return optuna.pruners.PatientPruner(
        wrapped, patience=pruning.patience, min_delta=pruning.min_delta
    )


PRUNERS: Mapping[str, PrunerFactory] = {
    "none": _no_pruner,
    "median": _median,
    "asha": _asha,
    "hyperband": _hyperband,
    "patient": _patient,
}
"""``search.pruner`` name -> factory. A pruner is fed every evaluation but never prunes a
trial's final one (``trainers.callbacks``): by then the trial has spent its compute."""


def make_sampler(config: SweepConfig, *, worker: int = 0) -> BaseSampler:
    """The sampler named by ``search.sampler``; workers get distinct seeds so that random-based
    samplers do not propose the same point on every worker."""
    factory = _named(SAMPLERS, config.search.sampler, "sampler")
    with _chosen_experimental():
        return factory(config, config.search.seed + worker)


def make_pruner(config: SweepConfig) -> BasePruner:
    """The pruner named by ``search.pruner``."""
    factory = _named(PRUNERS, config.search.pruner, "pruner")
    with _chosen_experimental():
        return factory(config)


def _named(registry: Mapping[str, _Factory], name: str, kind: str) -> _Factory:
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; known: {', '.join(sorted(registry))}")
    return registry[name]


@contextmanager
def _chosen_experimental() -> Iterator[None]:
    """Optuna warns at every construction with an experimental argument (heartbeats, TPE's
    ``group``); these are chosen deliberately, and a read-only ``tunefleet status`` must print
    only its answer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


STORAGE_POOL: Mapping[str, int] = {"pool_size": 1, "max_overflow": 1}
"""Connections Optuna's storage may hold on a server database. Three threads use it (the
worker's, its heartbeat and its stale-trial clock), each for short transactions, so a third
waits for a connection rather than opening one. With the store's pool
(``platform.store.engine.SERVER_POOL``, at most 3) a worker holds at most 5 connections to
PostgreSQL, 16 workers and the launcher under its default limit of 100 (optuna#1347)."""


StaleCallback = Callable[[optuna.Study, optuna.trial.FrozenTrial], None]
"""What to do with a trial found stale (``search.liveness``): re-queue it or fail it for good."""


def make_storage(
    url: str,
    *,
    heartbeat_s: int = HEARTBEAT_SECONDS,
    stale_after_s: int = GRACE_SECONDS,
    on_stale: StaleCallback | None = None,
) -> RDBStorage:
    """Optuna's storage with heartbeats on (``search.heartbeat_s``, ``search.stale_after_s``),
    and SQLite waiting out its lock (optuna#820)."""
    engine_kwargs: dict[str, object] = {}
    if url.startswith("sqlite"):
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs.update(pool_pre_ping=True, **STORAGE_POOL)
    with _chosen_experimental():
        return RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_s,
            grace_period=stale_after_s,
            heartbeat_stale_trial_callback=on_stale,
        )


def open_study(
    config: SweepConfig, *, storage: RDBStorage, worker: int = 0, create: bool = False
) -> optuna.Study:
    """The sweep's study: one direction, or one per objective in a multi-objective sweep. With
    ``create``, a multi-objective sweep's primary study (:func:`primary_study`) is created too."""
    sampler, pruner = make_sampler(config, worker=worker), make_pruner(config)
    if create:
        if config.search.multi_objective:
            primary_study(config, storage=storage, create=True)
        return optuna.create_study(
            study_name=config.name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            directions=[o.direction for o in config.search.all_objectives],
            load_if_exists=True,
        )
    return optuna.load_study(
        study_name=config.name, storage=storage, sampler=sampler, pruner=pruner
    )


PRIMARY_SUFFIX = "#primary"
"""A multi-objective sweep's primary study is named ``NAME#primary`` (``#`` is not allowed in
sweep names, so it never meets a sweep's own study)."""


def fail_twin(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
    """Fail a multi-objective trial's twin (``primary_study``) that is still RUNNING: its
    trial was failed by whoever found its worker dead, and that worker will never tell the
    twin; a RUNNING twin would stay a competitor at the pruner's rungs for good. True if
    failed here; False for a trial without a twin, or one already ended."""
    number = trial.user_attrs.get("twin")
    if number is None:
        return False
    primary = optuna.load_study(
        study_name=study.study_name + PRIMARY_SUFFIX, storage=study._storage
    )
    return fail_trial(primary, int(number))


def primary_study(
    config: SweepConfig, *, storage: RDBStorage, create: bool = False
) -> optuna.Study:
    """Pruning on the first objective of a multi-objective sweep, which Optuna refuses
    (``report`` raises on a multi-objective trial): each trial has a twin here, in a
    single-objective study with the first objective's direction and the sweep's pruner, which
    receives its evaluations and is told how it ended. The configured pruner thus decides on
    the primary metric alone exactly as in a single-objective sweep, Hyperband's brackets and
    ASHA's rungs included. Its twins hold no params: its sampler is never asked."""
    name = config.name + PRIMARY_SUFFIX
    sampler = optuna.samplers.RandomSampler(seed=config.search.seed)
    pruner = make_pruner(config)
    if create:
        return optuna.create_study(
            study_name=name,
            storage=storage,
            sampler=sampler,
            pruner=pruner,
            direction=config.search.direction,
            load_if_exists=True,
        )
    return optuna.load_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner)


def pruning_report(trial: optuna.Trial) -> Callable[[int, float], bool]:
    """The training path's ``report``: each evaluation goes to the study's pruner as the
    intermediate value at its resource (the global step, or examples seen); True when the
    pruner would stop the trial there. ``trial`` is a multi-objective trial's twin in the
    primary study."""

    def report(resource: int, value: float) -> bool:
        trial.report(value, resource)
        return trial.should_prune()

    return report
