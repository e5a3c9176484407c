"""The search space as Optuna suggest calls, against real Optuna studies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from tunefleet.config import SweepConfig, apply_params, parse_config
from tunefleet.search.space import grid, suggest_params
from tunefleet.search.study import (
    PRUNERS,
    SAMPLERS,
    grid_size,
    make_pruner,
    make_sampler,
    make_storage,
    open_study,
)


def config_with(space: dict[str, Any], data: Path, **search: Any) -> SweepConfig:
    return parse_config(
        {"name": "s", "data": {"train": str(data)}, "search": {"space": space, **search}}
    )


def sample(config: SweepConfig, trials: int) -> list[dict[str, Any]]:
    study = optuna.create_study(sampler=make_sampler(config), direction="maximize")
    out = []
    for _ in range(trials):
        trial = study.ask()
        params = suggest_params(trial, config)
        study.tell(trial, 0.0)
        out.append(params)
    return out


def test_each_dimension_maps_to_its_distribution(sentiment_csv: Path) -> None:
    config = config_with(
        {
            "train.learning_rate": {"low": 1e-5, "high": 1e-3, "log": True},
            "train.batch_size": {"choices": [8, 16, 32]},
            "train.epochs": {"low": 1, "high": 4},
            "train.weight_decay": {"low": 0.0, "high": 0.1, "step": 0.05},
        },
        sentiment_csv,
        sampler="random",
    )
    study = optuna.create_study(sampler=make_sampler(config))
    trial = study.ask()
    params = suggest_params(trial, config)
    (frozen,) = study.get_trials(deepcopy=False)  # the running trial, as the storage has it
    dists = frozen.distributions
    assert dists["train.learning_rate"] == optuna.distributions.FloatDistribution(
        1e-5, 1e-3, log=True
    )
    assert dists["train.batch_size"] == optuna.distributions.CategoricalDistribution([8, 16, 32])
    assert dists["train.epochs"] == optuna.distributions.IntDistribution(1, 4)
    assert dists["train.weight_decay"] == optuna.distributions.FloatDistribution(
        0.0, 0.1, step=0.05
    )
    assert isinstance(params["train.epochs"], int)
    applied = apply_params(config, params)
    assert applied.train.batch_size == params["train.batch_size"]
    assert applied.train.learning_rate == params["train.learning_rate"]


def test_method_subspace_is_sampled_only_when_its_method_is_drawn(sentiment_csv: Path) -> None:
    config = config_with(
        {
            "train.lora.r": {"choices": [4, 8]},
            "train.method": {"choices": ["full", "lora"]},
            "train.learning_rate": {"low": 1e-5, "high": 1e-3},
        },
        sentiment_csv,
        sampler="random",
    )
    drawn = sample(config, 16)
    methods = {p["train.method"] for p in drawn}
    assert methods == {"full", "lora"}
    for params in drawn:
        assert ("train.lora.r" in params) == (params["train.method"] == "lora"), params
        assert "train.learning_rate" in params


def test_fixed_method_decides_the_subspace(sentiment_csv: Path) -> None:
    full = parse_config(
        {
            "name": "s",
            "data": {"train": str(sentiment_csv)},
            "train": {"method": "full"},
            "search": {"space": {"train.lora.r": {"choices": [4, 8]}}},
        }
    )
    assert sample(full, 3) == [{}, {}, {}]


def test_list_valued_choices_round_trip(sentiment_csv: Path) -> None:
    config = config_with(
        {"train.lora.target_modules": {"choices": [["query"], ["query", "value"]]}},
        sentiment_csv,
        sampler="random",
    )
    drawn = sample(config, 8)
    assert {tuple(p["train.lora.target_modules"]) for p in drawn} <= {
        ("query",),
        ("query", "value"),
    }
    assert (
        apply_params(config, drawn[0]).train.lora.target_modules
        == drawn[0]["train.lora.target_modules"]
    )


def test_grid_enumerates_every_point(sentiment_csv: Path) -> None:
    config = config_with(
        {
            "train.batch_size": {"choices": [8, 16]},
            "train.epochs": {"low": 1, "high": 3},
            "train.weight_decay": {"low": 0.0, "high": 0.1, "step": 0.05},
        },
        sentiment_csv,
        sampler="grid",
    )
    assert grid(config)["train.epochs"] == [1, 2, 3]
    assert grid_size(config) == 18
    drawn = sample(config, 18)
    points = {
        (p["train.batch_size"], p["train.epochs"], round(p["train.weight_decay"], 3)) for p in drawn
    }
    assert len(points) == 18


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_builds_and_samples(sentiment_csv: Path, name: str) -> None:
    config = config_with({"train.batch_size": {"choices": [8, 16]}}, sentiment_csv, sampler=name)
    assert all("train.batch_size" in p for p in sample(config, 3))


@pytest.mark.parametrize("name", sorted(PRUNERS))
def test_every_pruner_builds_and_answers(sentiment_csv: Path, name: str) -> None:
    config = config_with({}, sentiment_csv, pruner=name)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(config))
    trial = study.ask()
    trial.report(0.5, 1)
    assert trial.should_prune() in (True, False)


def test_config_names_exactly_the_registered_samplers_and_pruners() -> None:
    """A sampler or pruner is added in two places, its factory and the config's literal (the
    config cannot import search); this keeps them the same names."""
    from typing import get_args

    from tunefleet.config import Pruner, Sampler

    assert set(get_args(Sampler)) == set(SAMPLERS)
    assert set(get_args(Pruner)) == set(PRUNERS)


def test_an_unknown_sampler_is_named_with_the_known_ones(sentiment_csv: Path) -> None:
    config = config_with({}, sentiment_csv).model_copy(deep=True)
    search = config.search.model_copy(update={"sampler": "bohb"})
    with pytest.raises(
        ValueError, match=r"unknown sampler 'bohb'; known: cmaes, grid, nsga2, random, tpe"
    ):
        make_sampler(config.model_copy(update={"search": search}))


def test_workers_get_distinct_seeds(sentiment_csv: Path) -> None:
    config = config_with(
        {"train.learning_rate": {"low": 1e-5, "high": 1e-3}}, sentiment_csv, sampler="random"
    )
    a = optuna.create_study(sampler=make_sampler(config, worker=0)).ask()
    b = optuna.create_study(sampler=make_sampler(config, worker=1)).ask()
    assert a.suggest_float("x", 0, 1) != b.suggest_float("x", 0, 1)


def test_median_pruner_prunes_a_clearly_worse_trial(sentiment_csv: Path) -> None:
    config = config_with({}, sentiment_csv, pruner="median")
    study = optuna.create_study(direction="maximize", pruner=make_pruner(config))
    for value in (0.9, 0.8):
        trial = study.ask()
        trial.report(value, 1)
        study.tell(trial, value)
    worse = study.ask()
    worse.report(0.1, 1)
    assert worse.should_prune()


def test_open_study_creates_once_then_loads(tmp_path: Path, sentiment_csv: Path) -> None:
    config = config_with({}, sentiment_csv)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    created = open_study(config, storage=make_storage(url), create=True)
    created.tell(created.ask(), 1.0)
    again = open_study(config, storage=make_storage(url), create=True)
    assert len(again.trials) == 1 and again.direction == optuna.study.StudyDirection.MAXIMIZE
