"""``search.warm_start``: an earlier sweep in the same --db starts a new one.

The earlier sweeps here are real: recorded by the launcher's own ``prepare_sweep`` in a SQLite
file, their trials drawn by ``suggest_params`` (as a worker draws them, list-valued choices
stored as JSON text) and told by real ask/tell. The last tests run ``tunefleet sweep`` itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from support.cli import run_cli
from support.configs import write_config
from tunefleet.config import SweepConfig, flatten, parse_config
from tunefleet.errors import ConfigError
from tunefleet.platform import cli
from tunefleet.platform.launcher import prepare_sweep, progress_line, store_has_complete
from tunefleet.platform.layout import Layout
from tunefleet.platform.status import open_view, status_json
from tunefleet.platform.store import Store
from tunefleet.platform.worker import WorkerOptions, run_worker
from tunefleet.search.space import suggest_params
from tunefleet.search.study import make_storage, open_study, primary_study
from tunefleet.search.warm_start import (
    STUDY_ATTR,
    fit,
    is_history,
    own_trials,
    ranked,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

TARGETS = [["query"], ["query", "value"]]
OLD_SPACE: dict[str, Any] = {
    "train.method": {"choices": ["full", "lora"]},
    "train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True},
    "train.lora.r": {"choices": [2, 4, 8, 16]},
    "train.lora.target_modules": {"choices": TARGETS},
}


def sweep_config(
    model: Path, data: Path, name: str, space: dict[str, Any], **search: Any
) -> SweepConfig:
    return parse_config(
        {
            "name": name,
            "model": {"name_or_path": str(model)},
            "data": {"train": str(data), "max_length": 32},
            "train": {"epochs": 1, "batch_size": 16},
            "search": {"sampler": "random", "pruner": "none", "space": space, **search},
            "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
        }
    )


def value_of(params: dict[str, Any]) -> float:
    """A made-up objective: a higher learning rate is better, rank 16 best of all (so the best
    trials are the ones a narrower space leaves out)."""
    bonus = 1.0 if params.get("train.lora.r") == 16 else 0.0
    return params["train.learning_rate"] * 100 + bonus


def earlier_sweep(
    layout: Layout,
    config: SweepConfig,
    *,
    trials: int = 12,
    ending: Callable[[optuna.Trial, dict[str, Any]], Any] | None = None,
    value: Callable[[dict[str, Any]], float] = value_of,
) -> optuna.Study:
    """``config`` recorded as a sweep, with ``trials`` drawn and told as a worker would;
    ``ending`` may tell a trial otherwise (prune or fail it), returning something not None."""
    prepare_sweep(config, layout, layout.db_url).dispose()
    study = open_study(config, storage=make_storage(layout.db_url))
    for _ in range(trials):
        trial = study.ask()
        params = suggest_params(trial, config)
        if ending is None or ending(trial, params) is None:
            study.tell(trial, value(params))
    return study


def new_study(layout: Layout, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=make_storage(layout.db_url))


def waiting(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.WAITING,))


def fits_narrow(params: dict[str, Any]) -> bool:
    """The narrow space below, written out: lr within 1e-4..3e-3, lora ranks 2/4/8 only."""
    lora = params["train.method"] == "lora"
    return 1e-4 <= params["train.learning_rate"] <= 3e-3 and (
        not lora or params["train.lora.r"] in (2, 4, 8)
    )


NARROW = {
    **OLD_SPACE,
    "train.learning_rate": {"low": 1e-4, "high": 3e-3, "log": True},
    "train.lora.r": {"choices": [2, 4, 8]},
}


def test_top_k_enqueues_the_best_trials_that_fit_and_says_why_others_are_skipped(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = Layout.at(tmp_path / "runs")
    old = earlier_sweep(layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE))
    warm = {"from": "old", "top_k": 4}
    config = sweep_config(tiny_model, sentiment_csv, "new", NARROW, warm_start=warm)
    capsys.readouterr()
    prepare_sweep(config, layout, layout.db_url).dispose()
    out = capsys.readouterr().out

    best_first = sorted(
        old.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.values[0], t.number)
    )
    decoded = [{**t.params, **_targets(t.params)} for t in best_first]
    expected = [t for t, p in zip(best_first, decoded, strict=True) if fits_narrow(p)][:4]
    queued = waiting(new_study(layout, "new"))
    assert [q.user_attrs["warm_start"] for q in queued] == [
        {"from": "old", "trial": t.number} for t in expected
    ]
    assert [q.system_attrs["fixed_params"] for q in queued] == [t.params for t in expected]
    # Every better trial than the last enqueued one that was not enqueued has its line.
    last = best_first.index(expected[-1])
    passed_over = [t for t in best_first[:last] if t not in expected]
    assert passed_over, "the data should put out-of-space trials among the best"
    for trial in passed_over:
        line = next(x for x in out.splitlines() if f"trial {trial.number} of 'old' skipped" in x)
        params = decoded[best_first.index(trial)]
        if params["train.learning_rate"] > 3e-3:
            assert "train.learning_rate" in line and "is outside 0.0001..0.003 log" in line
        else:
            assert "train.lora.r = 16 is not among the choices [2, 4, 8]" in line
    assert "warm start: enqueued 4 of 12 complete trial(s) of 'old'" in out

    # A worker asking gets them first, and its params are the earlier trial's, lists decoded.
    study = open_study(config, storage=make_storage(layout.db_url))
    trial = study.ask()
    assert suggest_params(trial, config) == decoded[best_first.index(expected[0])]


def _targets(params: dict[str, Any]) -> dict[str, Any]:
    key = "train.lora.target_modules"
    return {key: json.loads(params[key])} if key in params else {}


@pytest.mark.parametrize(
    ("space", "params", "expected"),
    [
        (
            {"train.batch_size": {"low": 8, "high": 32, "step": 8}},
            {"train.batch_size": 12},
            "train.batch_size = 12 is not on the grid of 8..32 step 8 (from 8 by 8)",
        ),
        (
            {"train.batch_size": {"low": 8, "high": 32, "step": 8}},
            {"train.batch_size": 24},
            {"train.batch_size": 24},
        ),
        (
            {"train.epochs": {"low": 1, "high": 3}},
            {"train.epochs": 2.5},
            "train.epochs = 2.5 is not an integer",
        ),
        (
            {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
            {"train.learning_rate": 1e-3, "train.weight_decay": 0.05},
            "train.weight_decay = 0.05 is not searched here (fixed at 0.0)",
        ),
        (
            {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
            {"train.learning_rate": 1e-3, "train.weight_decay": 0.0},
            {"train.learning_rate": 1e-3},
        ),
        (  # the config's method is full: a lora rank is never drawn here, whatever it was
            {"train.lora.r": {"choices": [2, 4]}},
            {"train.lora.r": 16, "train.learning_rate": 2e-5},
            {},
        ),
        (
            {"train.method": {"choices": ["full", "lora"]}, "train.lora.r": {"choices": [2, 4]}},
            {"train.method": "lora", "train.lora.r": 16},
            "train.lora.r = 16 is not among the choices [2, 4]",
        ),
        (
            {"train.lora.target_modules": {"choices": [["query"], ["key"]]}},
            {"train.lora.target_modules": json.dumps(["query"])},
            {"train.lora.target_modules": json.dumps(["query"])},
        ),
    ],
)
def test_fit_says_which_path_and_value_and_what_this_space_allows(
    tiny_model: Path,
    sentiment_csv: Path,
    space: dict[str, Any],
    params: dict[str, Any],
    expected: Any,
) -> None:
    config = sweep_config(tiny_model, sentiment_csv, "new", space)
    fixed = flatten(config.model_dump(mode="json", by_alias=True))
    got, why = fit(params, config, fixed=fixed)
    assert (why if isinstance(expected, str) else got) == expected
    assert why is None or got == {}


def test_top_k_ranks_a_multi_objective_sweep_front_first(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    study = optuna.create_study(
        directions=["maximize", "minimize"],
        storage=f"sqlite:///{tmp_path / 'mo.db'}",
        sampler=optuna.samplers.RandomSampler(seed=3),
    )
    config = sweep_config(tiny_model, sentiment_csv, "mo", OLD_SPACE)
    for _ in range(15):
        trial = study.ask()
        params = suggest_params(trial, config)
        study.tell(trial, [value_of(params), params["train.learning_rate"] ** 0.5 * 10])
    front = {t.number for t in study.best_trials}
    order = ranked(study)
    assert {t.number for t in order[: len(front)]} == front
    for part in (order[: len(front)], order[len(front) :]):
        assert [t.values[0] for t in part] == sorted((t.values[0] for t in part), reverse=True)


def test_a_resumed_sweep_does_not_enqueue_again_and_the_budget_caps_k(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = Layout.at(tmp_path / "runs")
    earlier_sweep(layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE))
    warm = {"from": "old", "top_k": 5}
    config = sweep_config(tiny_model, sentiment_csv, "new", OLD_SPACE, trials=3, warm_start=warm)
    prepare_sweep(config, layout, layout.db_url).dispose()
    study = new_study(layout, "new")
    assert len(waiting(study)) == 3  # the budget, not top_k
    assert study.user_attrs[STUDY_ATTR] == "old"
    # One enqueued trial runs and completes; the sweep is then resumed.
    trial = study.ask()
    study.tell(trial, 0.5)
    capsys.readouterr()
    prepare_sweep(config, layout, layout.db_url).dispose()
    assert "warm start" not in capsys.readouterr().out
    assert len(waiting(study)) == 2 and len(study.get_trials()) == 3


def test_an_earlier_sweep_without_a_complete_trial_starts_cold_with_a_line(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = Layout.at(tmp_path / "runs")
    old = sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE)
    earlier_sweep(
        layout, old, trials=3, ending=lambda t, p: t.study.tell(t, state=TrialState.FAIL) or 1
    )
    for mode in ("top_k", "history"):
        config = sweep_config(
            tiny_model,
            sentiment_csv,
            f"new-{mode}",
            OLD_SPACE,
            warm_start={"from": "old", "mode": mode},
        )
        capsys.readouterr()
        prepare_sweep(config, layout, layout.db_url).dispose()
        assert (
            "warm start: sweep 'old' has no complete trial; starting cold"
            in capsys.readouterr().out
        )
        assert new_study(layout, f"new-{mode}").get_trials() == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("nowhere", "no sweep named 'nowhere' in this --db; sweeps here: old"),
        ("new", "'new' is this sweep itself; name an earlier sweep"),
    ],
)
def test_warm_start_from_an_unknown_sweep_or_itself_is_refused_before_anything_is_recorded(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, name: str, expected: str
) -> None:
    layout = Layout.at(tmp_path / "runs")
    earlier_sweep(layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE), trials=2)
    config = sweep_config(tiny_model, sentiment_csv, "new", OLD_SPACE, warm_start={"from": name})
    with pytest.raises(ConfigError) as info:
        prepare_sweep(config, layout, layout.db_url)
    assert info.value.problems == [("search.warm_start.from", expected)]
    assert Store(layout.db_url).sweep_names() == ["old"]
    assert [s.study_name for s in optuna.get_all_study_summaries(layout.db_url)] == ["old"]


def test_history_with_other_objectives_is_refused_naming_them(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    layout = Layout.at(tmp_path / "runs")
    earlier_sweep(layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE), trials=2)
    config = sweep_config(
        tiny_model,
        sentiment_csv,
        "new",
        OLD_SPACE,
        metric="eval_loss",
        direction="minimize",
        warm_start={"from": "old", "mode": "history"},
    )
    with pytest.raises(ConfigError) as info:
        prepare_sweep(config, layout, layout.db_url)
    [(key, message)] = info.value.problems
    assert key == "search.warm_start.from"
    assert "it has eval_accuracy (maximize), this sweep eval_loss (minimize)" in message


def prune_some(trial: optuna.Trial, params: dict[str, Any]) -> Any:
    """Every trial reports two evaluations; one in three is pruned after the first."""
    for step in (1, 2):
        trial.report(value_of(params) * step / 2, step)
        if step == 1 and trial.number % 3 == 0:
            trial.study.tell(trial, state=TrialState.PRUNED)
            return True
    return None


@pytest.mark.slow
def test_history_reaches_the_sampler_but_never_counts_nor_becomes_best(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    layout = Layout.at(tmp_path / "runs")
    old_config = sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE)
    # Values no accuracy reaches: were history ever taken for this sweep's best, it would win.
    old = earlier_sweep(
        layout, old_config, trials=9, ending=prune_some, value=lambda p: value_of(p) + 1.5
    )
    warm = {"from": "old", "mode": "history"}
    config = sweep_config(tiny_model, sentiment_csv, "new", OLD_SPACE, trials=2, warm_start=warm)
    capsys.readouterr()
    prepare_sweep(config, layout, layout.db_url).dispose()
    out = capsys.readouterr().out
    assert "6 complete and 3 pruned trial(s) of 'old' given to the sampler" in out

    study = open_study(config, storage=make_storage(layout.db_url))
    history = study.get_trials()  # what every sampler and pruner reads: the study's trials
    assert all(is_history(t) for t in history) and not store_has_complete(study)
    copied = {t.user_attrs["warm_start"]["trial"]: t for t in history}
    finished = old.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED))
    assert sorted(copied) == [t.number for t in finished]
    for earlier in finished:
        copy = copied[earlier.number]
        assert (copy.state, copy.params, copy.values) == (
            earlier.state,
            earlier.params,
            earlier.values,
        )
        assert copy.intermediate_values == earlier.intermediate_values  # same curves: kept

    # A real worker runs the sweep: exactly its budget of trials of its own.
    assert run_worker(WorkerOptions(name="new", layout=layout, db_url=layout.db_url)) == 2
    own = own_trials(study)
    assert [t.state for t in own] == [TrialState.COMPLETE] * 2
    assert len(study.get_trials()) == len(history) + 2
    store = Store(layout.db_url)
    assert store.get_sweep("new").claimed == 2
    best = store.best("new")
    assert best is not None and best.number == max(own, key=lambda t: t.values[0]).number
    assert best.checkpoint and Path(best.checkpoint).is_dir()
    line = progress_line(study, 2, time.time())
    assert "done 2/2" in line and f"(trial {best.number})" in line

    prepare_sweep(config, layout, layout.db_url).dispose()  # resumed: recounted, nothing copied
    assert store.get_sweep("new").claimed == 2
    assert len(study.get_trials()) == len(history) + 2

    capsys.readouterr()
    assert cli.main(["status", "new", "--out", str(layout.out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("sweep new: 2 complete") and "pruned" not in lines[0]
    assert lines[1] == f"+ {len(history)} trials of history from old"
    rows = [row for row in lines[3:] if row.split() and row.split()[0].isdigit()]
    assert {int(row.split()[0]) for row in rows} == {t.number for t in own}
    assert any(line.startswith("cpu-hours: ") for line in lines[3:])  # the cost line follows
    view = open_view(store, "new", layout.db_url)
    info = status_json(view)
    assert info["history"] == {"from": "old", "trials": len(history)}
    assert info["best"]["number"] == best.number == view.study.best_trial.number


def test_history_without_comparable_curves_copies_complete_trials_only(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    layout = Layout.at(tmp_path / "runs")
    old = earlier_sweep(
        layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE), ending=prune_some
    )
    config = parse_config(
        {
            **sweep_config(tiny_model, sentiment_csv, "new", OLD_SPACE).model_dump(mode="json"),
            "train": {"epochs": 2, "batch_size": 16},
            "search": {
                "sampler": "random",
                "space": OLD_SPACE,
                "warm_start": {"from": "old", "mode": "history"},
            },
        }
    )
    prepare_sweep(config, layout, layout.db_url).dispose()
    history = new_study(layout, "new").get_trials()
    complete = old.get_trials(states=(TrialState.COMPLETE,))
    assert sorted(t.user_attrs["warm_start"]["trial"] for t in history) == [
        t.number for t in complete
    ]
    assert all(t.intermediate_values == {} for t in history)


# --- through the command line ------------------------------------------------------------------


@pytest.mark.slow
def test_sweep_warm_started_top_k_runs_the_earlier_best_that_fit_first(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    layout = Layout.at(tmp_path / "runs")
    old = earlier_sweep(layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE))
    best_first = sorted(
        old.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: (-t.values[0], t.number)
    )
    expected = [t for t in best_first if fits_narrow({**t.params, **_targets(t.params)})][:2]
    warm = {"from": "old", "top_k": 2}
    config = sweep_config(tiny_model, sentiment_csv, "top", NARROW, trials=2, warm_start=warm)
    result = run_cli("sweep", str(write_config(tmp_path, config)), "--out", str(layout.out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warm start: enqueued 2 of 12 complete trial(s) of 'old'" in result.stdout
    ran = new_study(layout, "top").get_trials()
    assert [t.state for t in ran] == [TrialState.COMPLETE] * 2
    assert [t.params for t in ran] == [t.params for t in expected]
    assert [t.user_attrs["warm_start"]["trial"] for t in ran] == [t.number for t in expected]


def test_history_from_a_different_space_exits_2_naming_the_dimensions(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    layout = Layout.at(tmp_path / "runs")
    old = earlier_sweep(layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE))
    before = [(t.number, t.state, t.params, t.values) for t in old.get_trials()]
    space = {**NARROW, "train.weight_decay": {"low": 0.0, "high": 0.1}}
    warm = {"from": "old", "mode": "history"}
    config = sweep_config(tiny_model, sentiment_csv, "other", space, warm_start=warm)
    result = run_cli("sweep", str(write_config(tmp_path, config)), "--out", str(layout.out))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "search.warm_start.from: mode history needs the same search.space" in result.stderr
    differing = result.stderr.split("differing dimensions (old vs new): ")[1].splitlines()[0]
    assert differing.split("; ") == [
        "train.learning_rate: 0.0001..0.01 log vs 0.0001..0.003 log",
        "train.lora.r: choices [2, 4, 8, 16] vs choices [2, 4, 8]",
        "train.weight_decay: not searched vs 0..0.1",
    ]
    # Nothing recorded: no sweep, no study, the earlier one's trials as they were.
    assert Store(layout.db_url).sweep_names() == ["old"]
    assert [s.study_name for s in optuna.get_all_study_summaries(layout.db_url)] == ["old"]
    after = [(t.number, t.state, t.params, t.values) for t in new_study(layout, "old").get_trials()]
    assert after == before


def test_validate_checks_the_warm_starts_sweep_in_its_db_and_creates_nothing(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    layout = Layout.at(tmp_path / "runs")

    def validate(name: str, space: dict[str, Any], **warm: Any) -> Any:
        config = sweep_config(tiny_model, sentiment_csv, name, space, warm_start=warm)
        path = write_config(tmp_path, config, name=name)
        return run_cli("validate", str(path), "--out", str(layout.out))

    # No database there yet: refused, and none is created.
    missing = validate("new", OLD_SPACE, **{"from": "old"})
    assert missing.returncode == 2, missing.stdout + missing.stderr
    assert "search.warm_start.from: no sweep named 'old'" in missing.stderr
    assert "does not exist yet" in missing.stderr and not layout.out.exists()

    earlier_sweep(layout, sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE), trials=3)
    unknown = validate("new", OLD_SPACE, **{"from": "olde"})
    assert unknown.returncode == 2
    assert "no sweep named 'olde' in this --db; sweeps here: old" in unknown.stderr
    other = validate("new", NARROW, **{"from": "old", "mode": "history"})
    assert other.returncode == 2
    assert "mode history needs the same search.space as 'old'" in other.stderr
    good = validate("new", NARROW, **{"from": "old", "top_k": 2})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "warm start: 3 complete trial(s) of 'old', mode top_k" in good.stdout
    # validate records nothing: the earlier sweep is the only one in the store and the storage.
    assert Store(layout.db_url).sweep_names() == ["old"]
    assert [s.study_name for s in optuna.get_all_study_summaries(layout.db_url)] == ["old"]


def test_history_of_a_multi_objective_sweep_gives_its_twins_curves_to_the_pruner(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    """Multi-objective trials report nothing (Optuna refuses): their evaluations are in their
    twins in ``NAME#primary``, where the pruner decides; history copies those too."""
    layout = Layout.at(tmp_path / "runs")
    objectives = [
        {"metric": "eval_accuracy", "direction": "maximize"},
        {"metric": "trainable_params", "direction": "minimize"},
    ]
    old_config = sweep_config(tiny_model, sentiment_csv, "old", OLD_SPACE, objectives=objectives)

    def with_twin(trial: optuna.Trial, params: dict[str, Any]) -> Any:
        primary = primary_study(old_config, storage=make_storage(layout.db_url))
        twin = primary.ask()
        twin.set_user_attr("trial", trial.number)
        trial.set_user_attr("twin", twin.number)
        if prune_some(twin, params):
            trial.study.tell(trial, state=TrialState.PRUNED)
            return True
        primary.tell(twin, value_of(params))
        trial.study.tell(trial, [value_of(params), 1000.0])
        return True

    earlier_sweep(layout, old_config, trials=6, ending=with_twin)
    warm = {"from": "old", "mode": "history"}
    config = sweep_config(
        tiny_model, sentiment_csv, "new", OLD_SPACE, objectives=objectives, warm_start=warm
    )
    prepare_sweep(config, layout, layout.db_url).dispose()

    storage = make_storage(layout.db_url)
    old_twins = primary_study(old_config, storage=storage).get_trials(deepcopy=False)
    copies = primary_study(config, storage=storage).get_trials(deepcopy=False)
    assert len(copies) == len(old_twins) == 6 and all(is_history(t) for t in copies)
    by_trial = {t.user_attrs["warm_start"]["trial"]: t for t in copies}
    for twin in old_twins:
        copy = by_trial[twin.user_attrs["trial"]]
        assert (copy.state, copy.values) == (twin.state, twin.values)
        assert copy.intermediate_values == twin.intermediate_values
    assert sum(t.state == TrialState.PRUNED for t in copies) == 2
