"""Each pruner's settings (search.pruning) change its decisions as documented, on real Optuna
studies fed curves at global steps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from support import trials
from tunefleet.config import SweepConfig
from tunefleet.search.study import make_pruner

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD, BAD = 0.9, 0.1


def config(model: Path, data: Path, pruner: str, **pruning: Any) -> SweepConfig:
    base = trials.tiny_config(model, data)
    settings = base.search.pruning.model_copy(update=pruning)
    return base.model_copy(
        update={"search": base.search.model_copy(update={"pruner": pruner, "pruning": settings})}
    )


def study_with(config: SweepConfig, curves: list[dict[int, float]]) -> optuna.Study:
    """Complete trials that reported ``curves`` (step -> value), told their best."""
    study = optuna.create_study(direction="maximize", pruner=make_pruner(config))
    for curve in curves:
        trial = study.ask()
        for step, value in curve.items():
            trial.report(value, step)
            trial.should_prune()  # as the training path asks: ASHA records rungs here
        study.tell(trial, max(curve.values()))
    return study


def pruned_at(study: optuna.Study, curve: dict[int, float]) -> int | None:
    """The first step at which a new trial reporting ``curve`` is pruned, or None."""
    trial = study.ask()
    for step, value in curve.items():
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return step
    study.tell(trial, max(curve.values()))
    return None


EVERY_2 = (2, 4, 6, 8)


def flat(value: float, steps: tuple[int, ...] = EVERY_2) -> dict[int, float]:
    return dict.fromkeys(steps, value)


@pytest.mark.parametrize(("startup", "expected"), [(2, 2), (3, None)])
def test_median_waits_for_its_startup_trials(
    tiny_model: Path, sentiment_csv: Path, startup: int, expected: int | None
) -> None:
    study = study_with(
        config(tiny_model, sentiment_csv, "median", startup_trials=startup), [flat(GOOD)] * 2
    )
    assert pruned_at(study, flat(BAD)) == expected


@pytest.mark.parametrize(("warmup", "expected"), [(0, 2), (5, 6)])
def test_median_warmup_is_in_steps(
    tiny_model: Path, sentiment_csv: Path, warmup: int, expected: int
) -> None:
    study = study_with(config(tiny_model, sentiment_csv, "median", warmup=warmup), [flat(GOOD)] * 2)
    assert pruned_at(study, flat(BAD)) == expected


@pytest.mark.parametrize(("min_resource", "expected"), [(None, 2), (4, 4)])
def test_asha_first_rung_is_the_first_evaluation_unless_set(
    tiny_model: Path, sentiment_csv: Path, min_resource: int | None, expected: int
) -> None:
    study = study_with(
        config(tiny_model, sentiment_csv, "asha", min_resource=min_resource), [flat(GOOD)] * 2
    )
    assert pruned_at(study, flat(BAD)) == expected


def test_asha_early_stopping_rate_moves_the_first_rung_up(
    tiny_model: Path, sentiment_csv: Path
) -> None:
    steps = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10)
    chosen = config(tiny_model, sentiment_csv, "asha", reduction_factor=3, early_stopping_rate=1)
    study = study_with(chosen, [flat(GOOD, steps)] * 2)
    assert pruned_at(study, flat(BAD, steps)) == 3  # min_resource 1 x 3^1


def test_patient_waits_for_evaluations_without_improvement(
    tiny_model: Path, sentiment_csv: Path
) -> None:
    chosen = config(tiny_model, sentiment_csv, "patient", wrapped="median", patience=2)
    steps = tuple(range(2, 22, 2))
    study = study_with(chosen, [flat(GOOD, steps)] * 2)
    # Improving on every evaluation, though far below the median: never pruned.
    climbing = {step: BAD + 0.01 * i for i, step in enumerate(steps)}
    assert pruned_at(study, climbing) is None
    # Falling: the wrapped pruner is asked once the last patience + 1 evaluations are all
    # below the best before them: the fourth evaluation (step 8).
    falling = {step: BAD - 0.01 * i for i, step in enumerate(steps)}
    assert pruned_at(study, falling) == 8


def test_none_never_prunes(tiny_model: Path, sentiment_csv: Path) -> None:
    study = study_with(config(tiny_model, sentiment_csv, "none"), [flat(GOOD)] * 3)
    assert pruned_at(study, flat(BAD)) is None


def test_hyperband_prunes_a_bad_curve_at_its_bracket_rung(
    tiny_model: Path, sentiment_csv: Path
) -> None:
    steps = tuple(range(1, 28))
    chosen = config(tiny_model, sentiment_csv, "hyperband", reduction_factor=3)
    study = study_with(chosen, [flat(GOOD, steps)] * 6)
    decided = [pruned_at(study, flat(BAD, steps)) for _ in range(6)]
    # Brackets' first rungs are at 1, 3, 9 and 27 steps (max_resource: the first complete
    # trial's 27); a bad curve is stopped at its bracket's rung, except in the bracket whose
    # rung is the last step, where Hyperband never prunes.
    assert set(decided) <= {1, 3, 9, None} and sum(d is not None for d in decided) >= 3, decided
