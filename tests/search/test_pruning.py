"""The sweep's pruner deciding over a real trial: the demo's case, the median pruner over three
epochs. A trial is pruned where the median says so, except at its final evaluation: by then its
compute is spent, so it completes and keeps its checkpoint."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from support import trials
from tunefleet.config import SweepConfig
from tunefleet.search.study import make_pruner, pruning_report
from tunefleet.trainers.checkpoint import MANIFEST, hash_folder
from tunefleet.trainers.data import load_splits
from tunefleet.trainers.run import TrialPruned, run_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)

UNREACHABLE = 2.0
"""An earlier trial's accuracy no trial can reach: the median prunes any trial compared with it."""


def three_epochs(model: Path, data: Path) -> SweepConfig:
    config = trials.tiny_config(
        model, data, data_options={"test_fraction": 0.2}, epochs=3, learning_rate=3e-3
    )
    assert (config.search.pruner, config.search.metric) == ("median", "eval_accuracy")
    return config


def epoch_end(config: SweepConfig, epoch: int) -> int:
    """The global step at which ``epoch`` ends: the resource its evaluation is reported at."""
    rows = len(load_splits(config.data).train)
    return epoch * math.ceil(rows / config.train.batch_size)


def study_after(config: SweepConfig, per_epoch: dict[int, float]) -> optuna.Study:
    """The sweep's own pruner over two complete trials (its startup count) that each evaluated
    ``per_epoch[epoch]`` at every epoch's last step."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner(config))
    for _ in range(2):
        done = study.ask()
        for epoch, value in per_epoch.items():
            done.report(value, epoch_end(config, epoch))
        study.tell(done, max(per_epoch.values()))
    return study


def test_a_trial_the_median_prunes_at_its_last_epoch_completes_with_its_checkpoint(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    config = three_epochs(tiny_model, sentiment_csv)
    study = study_after(config, {1: -1.0, 2: -1.0, 3: UNREACHABLE})
    trial = study.ask()
    outcome = run_trial(
        config, trials.trial_request(tmp_path, report=pruning_report(trial))
    )  # no TrialPruned
    assert trial.should_prune()  # the median did say prune at epoch 3
    frozen = study.get_trials(deepcopy=False)[-1]
    # every evaluation was reported, at its global step
    assert sorted(frozen.intermediate_values) == [epoch_end(config, e) for e in (1, 2, 3)]
    assert not outcome.pruned and outcome.value is not None
    assert outcome.checkpoint == tmp_path / "ckpt" and (tmp_path / "ckpt" / MANIFEST).is_file()
    assert outcome.checkpoint_sha256 == hash_folder(tmp_path / "ckpt")
    assert (
        "test_accuracy" in outcome.metrics
    )  # scored on the kept checkpoint, as complete trials are
    study.tell(trial, outcome.value)


@pytest.mark.parametrize("pruned_at", [1, 2])
def test_a_trial_the_median_prunes_before_its_last_epoch_is_pruned_there(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, pruned_at: int
) -> None:
    config = three_epochs(tiny_model, sentiment_csv)
    history = {epoch: (UNREACHABLE if epoch >= pruned_at else -1.0) for epoch in (1, 2, 3)}
    study = study_after(config, history)
    trial = study.ask()
    with pytest.raises(TrialPruned) as info:
        run_trial(config, trials.trial_request(tmp_path, report=pruning_report(trial)))
    outcome = info.value.outcome
    evaluated = [h["epoch"] for h in outcome.history if "eval_accuracy" in h]
    assert outcome.pruned and evaluated == [float(e) for e in range(1, pruned_at + 1)]
    reported = sorted(study.get_trials(deepcopy=False)[-1].intermediate_values)
    assert reported == [epoch_end(config, e) for e in range(1, pruned_at + 1)]
