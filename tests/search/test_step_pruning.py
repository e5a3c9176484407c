"""Evaluations inside an epoch (train.eval_every), each reported at its resource so the pruner
acts several times per epoch; ASHA on that resource; the best checkpoint among every
evaluation, mid-epoch ones included."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import optuna
import pytest

from support import trials
from support.cli import run_cli
from support.configs import write_config
from tunefleet.config import SweepConfig
from tunefleet.search.study import make_pruner, pruning_report
from tunefleet.trainers.checkpoint import MANIFEST
from tunefleet.trainers.data import load_splits
from tunefleet.trainers.run import TrialOutcome, TrialPruned, run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)

pytestmark = pytest.mark.slow

CAN_LEARN = 3e-3
"""The tiny model's eval loss stays near ln 2 at this rate..."""
OVERSHOOTS = 0.3
"""...and is clearly worse at every evaluation at this one (updates overshoot)."""


def two_epochs(model: Path, data: Path, **train: Any) -> SweepConfig:
    return trials.tiny_config(model, data, epochs=2, **train)


def steps_per_epoch(config: SweepConfig) -> int:
    return math.ceil(len(load_splits(config.data).train) / config.train.batch_size)


def evaluated_steps(outcome: TrialOutcome) -> list[int]:
    return [h["step"] for h in outcome.history if "eval_loss" in h]


@pytest.mark.parametrize(
    ("eval_every", "resource", "interval"),
    [
        (2, "steps", lambda spe: 2),
        (0.5, "steps", lambda spe: math.ceil(spe / 2)),
        (3, "examples", lambda spe: 3),
    ],
    ids=["every-2-steps", "half-epochs", "examples-seen"],
)
def test_each_evaluation_reaches_optuna_at_its_step(
    tmp_path: Path,
    tiny_model: Path,
    sentiment_csv: Path,
    eval_every: float,
    resource: str,
    interval: Any,
) -> None:
    config = two_epochs(tiny_model, sentiment_csv, eval_every=eval_every)
    search = config.search.model_copy(
        update={"pruning": config.search.pruning.model_copy(update={"resource": resource})}
    )
    config = config.model_copy(update={"search": search})
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    outcome = run_trial(config, trials.trial_request(tmp_path, report=pruning_report(trial)))
    total = 2 * steps_per_epoch(config)
    every = interval(steps_per_epoch(config))
    expected = sorted({*range(every, total + 1, every), total})  # and always the last step
    assert evaluated_steps(outcome) == expected
    per_step = 1 if resource == "steps" else config.train.batch_size
    reported = study.get_trials(deepcopy=False)[0].intermediate_values
    assert sorted(reported) == [s * per_step for s in expected]
    accuracies = [h["eval_accuracy"] for h in outcome.history if "eval_accuracy" in h]
    assert [reported[s * per_step] for s in expected] == accuracies


def asha_on_loss(model: Path, data: Path, learning_rate: float) -> SweepConfig:
    config = two_epochs(model, data, eval_every=2, learning_rate=learning_rate)
    search = config.search.model_copy(
        update={"pruner": "asha", "metric": "eval_loss", "direction": "minimize"}
    )
    return config.model_copy(update={"search": search})


def test_asha_prunes_a_trial_worse_at_its_first_rung_and_keeps_the_good_ones(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    good = asha_on_loss(tiny_model, sentiment_csv, CAN_LEARN)
    study = optuna.create_study(direction="minimize", pruner=make_pruner(good))
    kept = []
    for index in range(2):
        trial = study.ask()
        folder = tmp_path / f"good-{index}"
        outcome = run_trial(good, trials.trial_request(folder, report=pruning_report(trial)))
        study.tell(trial, outcome.value)
        kept.append(outcome)
    bad = asha_on_loss(tiny_model, sentiment_csv, OVERSHOOTS)
    trial = study.ask()
    with pytest.raises(TrialPruned) as pruned:
        run_trial(bad, trials.trial_request(tmp_path / "bad", report=pruning_report(trial)))
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    # Pruned at the first rung, the first evaluation (step 2), a fraction of its 16 steps.
    assert evaluated_steps(pruned.value.outcome) == [2]
    first_losses = [next(h["eval_loss"] for h in o.history if "eval_loss" in h) for o in kept]
    assert pruned.value.outcome.metrics["eval_loss"] > max(first_losses)
    assert all(not o.pruned and evaluated_steps(o)[-1] == 16 for o in kept)
    states = [t.state for t in study.get_trials(deepcopy=False)]
    assert states == [optuna.trial.TrialState.COMPLETE] * 2 + [optuna.trial.TrialState.PRUNED]


@pytest.mark.parametrize(
    ("metric", "direction", "learning_rate"),
    [("eval_accuracy", "maximize", CAN_LEARN), ("eval_loss", "minimize", OVERSHOOTS)],
)
def test_the_checkpoint_kept_is_the_best_of_every_evaluation(
    tmp_path: Path,
    tiny_model: Path,
    sentiment_csv: Path,
    metric: str,
    direction: str,
    learning_rate: float,
) -> None:
    config = two_epochs(tiny_model, sentiment_csv, eval_every=2, learning_rate=learning_rate)
    search = config.search.model_copy(update={"metric": metric, "direction": direction})
    config = config.model_copy(update={"search": search})
    outcome = run_trial(config, trials.trial_request(tmp_path))
    evaluations = [h for h in outcome.history if metric in h]
    assert len(evaluations) == 8  # four per epoch
    sign = 1 if direction == "maximize" else -1
    best = max(evaluations, key=lambda h: sign * h[metric])  # the first of equals
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    assert (manifest["value"], manifest["epoch"]) == (best[metric], best["epoch"])
    assert (outcome.value, outcome.best_epoch) == (best[metric], best["epoch"])


def test_a_min_resource_no_trial_reaches_is_refused_by_name(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    config = trials.tiny_config(tiny_model, sentiment_csv, epochs=2).model_dump(mode="json")
    config["search"].update(pruner="asha", pruning={"min_resource": 500})
    result = run_cli("validate", str(write_config(tmp_path, config)))
    assert result.returncode == 2
    assert "search.pruning.min_resource" in result.stdout + result.stderr
    assert "16 steps at most" in result.stdout + result.stderr
