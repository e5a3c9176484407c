"""Multi-objective sweeps: pruning on the primary objective through its twin study (Optuna
refuses ``report`` on a multi-objective trial), measured objectives, constraints, and a Pareto
front that matches a brute-force dominance check."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from support import trials
from support.cli import run_cli
from support.configs import write_config
from tunefleet.config import SweepConfig, parse_config
from tunefleet.platform.store import Store
from tunefleet.search.study import make_storage, open_study, primary_study, pruning_report
from tunefleet.trainers.run import TrialPruned, run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.slow

CAN_LEARN, OVERSHOOTS = 3e-3, 0.3
"""Learning rates at which the tiny model's eval loss holds near ln 2 / is clearly worse."""
TRAINABLE_BOUND = 3000
"""Between the tiny model's LoRA/IA3 trainable counts (about 1e3) and full fine-tuning's (7e4)."""


def multi_objective(model: Path, data: Path, **search: Any) -> dict[str, Any]:
    config = trials.tiny_config(model, data, epochs=2, eval_every=2).model_dump(mode="json")
    for derived in ("metric", "direction"):  # taken from the first objective
        del config["search"][derived]
    config["search"].update(
        objectives=[
            {"metric": "eval_loss", "direction": "minimize"},
            {"metric": "trainable_params", "direction": "minimize"},
        ],
        pruner="asha",
        **search,
    )
    return config


def test_a_trial_dominated_on_the_primary_at_a_rung_is_pruned(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    config = parse_config(multi_objective(tiny_model, sentiment_csv))
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = open_study(config, storage=storage, create=True)
    primary = primary_study(config, storage=storage)
    assert len(study.directions) == 2 and primary.direction.name == "MINIMIZE"

    def run(learning_rate: float, folder: str) -> tuple[optuna.Trial, Any]:
        trial, twin = study.ask(), primary.ask()
        with pytest.raises(NotImplementedError):
            trial.report(0.5, 1)  # Optuna's refusal: why twins exist
        lr_config = _with_lr(config, learning_rate)
        try:
            outcome = run_trial(
                lr_config, trials.trial_request(tmp_path / folder, report=pruning_report(twin))
            )
        except TrialPruned as pruned:
            study.tell(trial, state=TrialState.PRUNED)
            primary.tell(twin, state=TrialState.PRUNED)
            return trial, pruned.outcome
        study.tell(trial, [outcome.value, outcome.trainable_parameters])
        primary.tell(twin, outcome.value)
        return trial, outcome

    run(CAN_LEARN, "good-0")
    run(CAN_LEARN, "good-1")
    _, bad = run(OVERSHOOTS, "bad")
    assert bad.pruned and [h["step"] for h in bad.history if "eval_loss" in h] == [2]
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    assert 2 not in {t.number for t in study.best_trials}


def _with_lr(config: SweepConfig, learning_rate: float) -> SweepConfig:
    train = config.train.model_copy(update={"learning_rate": learning_rate})
    return config.model_copy(update={"train": train})


def dominates(a: list[float], b: list[float]) -> bool:
    """Both objectives minimised here."""
    return all(x <= y for x, y in zip(a, b, strict=True)) and a != b


def test_a_multi_objective_sweep_records_objectives_constraints_and_its_front(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    raw = multi_objective(
        tiny_model,
        sentiment_csv,
        trials=6,
        sampler="random",
        constraints=[f"trainable_params <= {TRAINABLE_BOUND}"],
        space={
            "train.method": {"choices": ["lora", "ia3", "full"]},
            "train.learning_rate": {"choices": [CAN_LEARN, OVERSHOOTS]},
        },
    )
    raw["tracking"] = {"mlflow": {"enabled": False}, "wandb": {"enabled": False}}
    out = tmp_path / "out"
    result = run_cli("sweep", str(write_config(tmp_path, raw)), "--out", str(out), timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    url = f"sqlite:///{out / 'tunefleet.db'}"
    study = optuna.load_study(study_name="unit", storage=url)
    records = {r.number: r for r in Store(url).trials("unit")}
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    assert complete, result.stdout
    for trial in complete:
        record = records[trial.number]
        measured = trial.user_attrs["measured"]
        assert record.measured == measured
        assert {"trainable_params", "total_params", "checkpoint_mb", "train_seconds"} <= set(
            measured
        )
        assert trial.values == [record.metrics["eval_loss"], measured["trainable_params"]]
        assert record.objective_values == trial.values
        feasible = measured["trainable_params"] <= TRAINABLE_BOUND
        assert record.feasible is feasible
        assert (trial.constraints[f"trainable_params <= {TRAINABLE_BOUND}"] <= 0) is feasible

    feasible = [t for t in complete if records[t.number].feasible]
    brute = {
        t.number
        for t in feasible
        if not any(dominates(o.values, t.values) for o in feasible if o is not t)
    }
    assert {t.number for t in study.best_trials} == brute
    shown = result.stdout.split("\nPareto front (", 1)[1].split("look at it")[0]
    assert sorted(int(n) for n in _trial_numbers(shown)) == sorted(brute)

    # Each trial's twin in the primary study ended as it did, with its evaluations.
    primary = optuna.load_study(study_name="unit#primary", storage=url)
    twins = {t.number: t for t in primary.get_trials(deepcopy=False)}
    for trial in study.get_trials(deepcopy=False):
        twin = twins[trial.user_attrs["twin"]]
        assert twin.user_attrs["trial"] == trial.number and twin.state == trial.state
        assert twin.intermediate_values
    assert json.loads(json.dumps(records[complete[0].number].measured))  # plain JSON


def _trial_numbers(text: str) -> list[str]:
    return [
        line.split("trial ", 1)[1].split(":", 1)[0]
        for line in text.splitlines()
        if line.startswith("  trial ")
    ]
