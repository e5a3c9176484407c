"""The Pareto front of multi-objective sweeps: computed (against Optuna and brute force), shown by
status, compare and the HTML report (loaded in headless Chromium), and chosen from by promote.

Sweeps are real: an Optuna study of several directions in a SQLite storage, told values and
constraints as the worker tells them, and the store's records with checkpoint folders."""

from __future__ import annotations

import json
import random
import re
import warnings
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial, TrialState
from plotly.offline import get_plotlyjs

from support.chromium import load
from tunefleet.config import Objective, parse_config
from tunefleet.platform import cli
from tunefleet.platform.pareto import dominates, front_of, preferred
from tunefleet.platform.store import Store
from tunefleet.search.study import make_storage, open_study

optuna.logging.set_verbosity(optuna.logging.WARNING)

ACC = Objective(metric="eval_accuracy", direction="maximize")
PARAMS = Objective(metric="trainable_params", direction="minimize")
LATENCY = Objective(metric="latency_ms", direction="minimize")
CONSTRAINT = "trainable_params <= 5e5"
SPACE = {"lr": FloatDistribution(1e-5, 1e-2, log=True)}


# --- the front itself ------------------------------------------------------------------------


def _brute_force_ranks(
    values: dict[int, tuple[float, ...]], directions: list[str]
) -> dict[int, int]:
    """Peel the non-dominated set off, layer after layer, comparing every pair."""
    ranks: dict[int, int] = {}
    left = dict(values)
    rank = 0
    while left:
        layer = [a for a in left if not any(dominates(left[b], left[a], directions) for b in left)]
        ranks.update({n: rank for n in layer})
        left = {n: v for n, v in left.items() if n not in layer}
        rank += 1
    return ranks


def _by_hand(a: tuple[float, ...], b: tuple[float, ...], directions: list[str]) -> bool:
    """Dominance written out per direction, independent of the module's sign flip."""
    no_worse = all(
        (x >= y if d == "maximize" else x <= y) for x, y, d in zip(a, b, directions, strict=True)
    )
    better = any(
        (x > y if d == "maximize" else x < y) for x, y, d in zip(a, b, directions, strict=True)
    )
    return no_worse and better


@pytest.mark.parametrize(
    ("objectives", "seed"),
    [([ACC, PARAMS], 0), ([ACC, PARAMS], 1), ([ACC, PARAMS, LATENCY], 2), ([PARAMS, ACC], 3)],
    ids=["2-obj-a", "2-obj-b", "3-obj", "min-first"],
)
def test_front_equals_brute_force_and_optunas_best_trials(
    tmp_path: Path, objectives: list[Objective], seed: int
) -> None:
    rng = random.Random(seed)
    directions = [o.direction for o in objectives]
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", directions=directions)
    for _ in range(60):
        trial = study.ask(SPACE)
        # Few distinct values: many ties, exact duplicates and equal coordinates.
        values = [float(rng.choice([1, 2, 3, 4, 5])) for _ in objectives]
        roll = rng.random()
        if roll < 0.1:
            study.tell(trial, state=TrialState.PRUNED)
        elif roll < 0.15:
            study.tell(trial, state=TrialState.FAIL)
        else:
            trial.set_constraint(CONSTRAINT, rng.choice([-1.0, 0.0, 0.0, 0.5]))
            study.tell(trial, values)
    # An exact copy of a front member: neither dominates the other, both stay on the front.
    copied = study.best_trials[0]
    twin = study.ask(SPACE)
    twin.set_constraint(CONSTRAINT, -1.0)
    study.tell(twin, copied.values)
    trials = study.get_trials(deepcopy=False)
    front = front_of(trials, objectives)

    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    feasible = {t.number: tuple(t.values) for t in complete if t.constraints[CONSTRAINT] <= 0}
    assert front.infeasible == {t.number for t in complete} - set(feasible)
    assert front.infeasible, "the draw must include infeasible trials"
    assert front.ranks == _brute_force_ranks(feasible, directions)
    assert max(front.ranks.values()) >= 2, "the draw must have several ranks"
    members = set(front.members)
    assert members == {t.number for t in study.best_trials}
    assert members == {
        a
        for a in feasible
        if not any(_by_hand(feasible[b], feasible[a], directions) for b in feasible)
    }
    assert {copied.number, twin.number} <= members
    # Each later rank is dominated by some trial of the rank just before it.
    for number, rank in front.ranks.items():
        if rank:
            above = [n for n, r in front.ranks.items() if r == rank - 1]
            assert any(_by_hand(feasible[a], feasible[number], directions) for a in above)


def _frozen(number: int, values: list[float], *, violation: float = 0.0) -> FrozenTrial:
    trial = optuna.trial.create_trial(
        values=values, system_attrs={f"constraints:{CONSTRAINT}": violation}
    )
    trial.number = number
    return trial


def test_prefer_takes_the_best_member_in_the_metric_and_breaks_ties_by_the_first() -> None:
    objectives = [ACC, PARAMS, LATENCY]
    trials = [
        _frozen(0, [0.80, 1e5, 10.0]),
        _frozen(1, [0.85, 1e5, 20.0]),  # ties 0 in params, better accuracy
        _frozen(2, [0.90, 3e5, 30.0]),
        _frozen(3, [0.99, 1e4, 1.0], violation=1.0),  # would win everything: infeasible
        _frozen(4, [0.70, 2e5, 5.0]),
    ]
    front = front_of(trials, objectives)
    assert front.members == [2, 1, 0, 4]
    assert preferred(front, "eval_accuracy") == 2
    assert preferred(front, "trainable_params") == 1
    assert preferred(front, "latency_ms") == 4
    with pytest.raises(
        ValueError,
        match="'checkpoint_mb' is not an objective of this sweep; one "
        "of eval_accuracy, trainable_params, latency_ms",
    ):
        preferred(front, "checkpoint_mb")


# --- a multi-objective sweep on disk ---------------------------------------------------------


@dataclass(frozen=True)
class Sweep:
    out: Path
    name: str
    front: list[int]
    """The front, best eval_accuracy first."""


# number -> (state, values, constraint violation); the worker's tells, in order.
TRIALS: list[tuple[TrialState, tuple[float, float] | None, float]] = [
    (TrialState.COMPLETE, (0.80, 1e5), -4e5),  # 0 front
    (TrialState.COMPLETE, (0.85, 3e5), -2e5),  # 1 front
    (TrialState.COMPLETE, (0.78, 2e5), -3e5),  # 2 dominated by 0
    (TrialState.COMPLETE, (0.90, 9e5), 4e5),  # 3 would be on the front: infeasible
    (TrialState.PRUNED, None, 0.0),  # 4
    (TrialState.FAIL, None, 0.0),  # 5
    (TrialState.COMPLETE, (0.85, 3e5), -2e5),  # 6 ties 1: front too
    (TrialState.COMPLETE, (0.88, 4e5), -1e5),  # 7 front
    (TrialState.RUNNING, None, 0.0),  # 8
]
FRONT = [7, 1, 6, 0]


def _checkpoint(folder: Path, number: int) -> dict[str, str]:
    from tunefleet.trainers.checkpoint import hash_folder

    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(f"weights of trial {number}".encode())
    (folder / "config.json").write_text(json.dumps({"trial": number}))
    return hash_folder(folder)


def _make_sweep(
    tmp_path: Path, sentiment_csv: Path, *, name: str, objectives: list[Objective]
) -> Store:
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    url = f"sqlite:///{out / 'tunefleet.db'}"
    config = parse_config(
        {
            "name": name,
            "data": {"train": str(sentiment_csv)},
            "search": {
                "objectives": [o.model_dump() for o in objectives],
                "constraints": [CONSTRAINT],
                "space": {"train.learning_rate": {"low": 1e-5, "high": 1e-2, "log": True}},
            },
            "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
        }
    )
    store = Store(url)
    store.create_sweep(name, config=config.model_dump(mode="json"), budget=len(TRIALS))
    return store


@pytest.fixture
def sweep(tmp_path: Path, sentiment_csv: Path) -> Sweep:
    """Sweep ``mo``: accuracy (max) vs trainable params (min), params <= 5e5, one trial in each
    state; complete ones have a checkpoint folder, as the worker leaves them."""
    name = "mo"
    store = _make_sweep(tmp_path, sentiment_csv, name=name, objectives=[ACC, PARAMS])
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ask/tell with heartbeats: the worker's own concern
        study = optuna.create_study(
            study_name=name,
            storage=make_storage(f"sqlite:///{out / 'tunefleet.db'}"),
            directions=["maximize", "minimize"],
        )
        for number, (state, values, violation) in enumerate(TRIALS):
            trial = study.ask({"train.learning_rate": FloatDistribution(1e-5, 1e-2, log=True)})
            assert trial.number == number
            fields: dict[str, Any] = {"state": state.name, "params": trial.params}
            if state == TrialState.COMPLETE:
                assert values is not None
                measured = {"trainable_params": values[1], "total_params": 4e6}
                trial.set_user_attr("measured", measured)
                trial.set_constraint(CONSTRAINT, violation)
                folder = out / "checkpoints" / name / f"trial-{number}"
                fields.update(
                    value=values[0],
                    metrics={"eval_accuracy": values[0], "test_accuracy": values[0] - 0.01},
                    objective_values=list(values),
                    measured=measured,
                    feasible=violation <= 0,
                    checkpoint=str(folder),
                    checkpoint_sha256=_checkpoint(folder, number),
                )
                study.tell(trial, list(values))
            elif state != TrialState.RUNNING:
                study.tell(trial, state=state)
            store.upsert_trial(name, number, **fields)
    store.dispose()
    return Sweep(out, name, FRONT)


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _rows(text: str) -> tuple[list[str], list[list[str]]]:
    """The table's header and rows, split on blanks (no cell of these sweeps has one)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("trial "))
    table = [line.split() for line in lines[start:] if line.strip()]
    return table[0], table[1:]


def _promotions(sweep: Sweep) -> dict[str, tuple[int, str]]:
    store = Store(f"sqlite:///{sweep.out / 'tunefleet.db'}")
    try:
        return {p.alias: (p.number, p.checkpoint) for p in store.promotions(sweep.name)}
    finally:
        store.dispose()


def test_status_marks_the_front_and_sorts_it_first(
    sweep: Sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("status", "compare"):
        code, out, err = _cli(capsys, command, sweep.name, "--out", str(sweep.out))
        assert code == 0, err
        header, rows = _rows(out)
        # The running trial 8 adds a progress column after the state.
        front = header.index("front")
        assert header[front:][:3] == ["front", "eval_accuracy", "trainable_params"]
        by_number = {int(r[0]): r for r in rows}
        assert [int(r[0]) for r in rows][:4] == FRONT, out
        assert sorted(n for n, r in by_number.items() if r[front] == "*") == sorted(FRONT)
        assert by_number[3][front] == "infeasible"
        assert by_number[2][front] == "-"
        assert by_number[7][front + 1 : front + 3] == ["0.8800", "400000"]
        # Dominated complete, then infeasible, then pruned, running and failed.
        assert [int(r[0]) for r in rows][4:] == [2, 3, 4, 8, 5], out


def test_status_json_names_the_objectives_values_and_front(
    sweep: Sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "status", sweep.name, "--out", str(sweep.out), "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["objectives"] == [
        {"metric": "eval_accuracy", "direction": "maximize"},
        {"metric": "trainable_params", "direction": "minimize"},
    ]
    assert info["pareto_front"] == FRONT
    assert info["best"] is None
    trials = {t["number"]: t for t in info["trials"]}
    assert {n for n, t in trials.items() if t["front"]} == set(FRONT)
    assert trials[7]["values"] == [0.88, 4e5]
    assert trials[3]["feasible"] is False and trials[3]["front"] is False
    assert trials[2]["feasible"] is True and trials[2]["front"] is False
    assert trials[4]["values"] is None and trials[4]["feasible"] is None
    assert all(t["value"] is None for t in trials.values())


def test_single_objective_status_json_is_unchanged(
    tmp_path: Path, sentiment_csv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    url = f"sqlite:///{out / 'tunefleet.db'}"
    config = parse_config({"name": "one", "data": {"train": str(sentiment_csv)}})
    store = Store(url)
    store.create_sweep("one", config=config.model_dump(mode="json"), budget=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = open_study(config, storage=make_storage(url), create=True)
        study.tell(study.ask(), 0.75)
    store.dispose()
    code, text, err = _cli(capsys, "status", "one", "--out", str(out), "--json")
    assert code == 0, err
    info = json.loads(text)
    assert not {"objectives", "pareto_front"} & set(info)
    assert info["best"]["value"] == 0.75
    assert not {"values", "front", "feasible"} & set(info["trials"][0])
    code, text, err = _cli(capsys, "status", "one", "--out", str(out))
    assert "front" not in text and "eval_accuracy" in text
    code, text, err = _cli(capsys, "promote", "one", "--out", str(out), "--prefer", "eval_f1")
    assert code == 2
    assert "--prefer chooses among the Pareto front of a multi-objective sweep" in err
    assert "'one' has one objective (eval_accuracy)" in err


# --- the report, in a browser ----------------------------------------------------------------


class _Marks(HTMLParser):
    """Every element carrying data-trial: (tag, its attributes)."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if "data-trial" in found or "data-front-line" in found:
            self.marks.append((tag, found))


def _marks(dom: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = _Marks()
    parser.feed(dom)
    return parser.marks


def test_the_browser_check_sees_console_errors_and_uncaught_exceptions(tmp_path: Path) -> None:
    page = tmp_path / "broken.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p id=x>ok</p>"
        "<script>console.error('bad'); notDefined();</script></body></html>"
    )
    loaded = load(page)
    assert 'id="x"' in loaded.dom
    assert any(line.startswith("Uncaught ReferenceError: notDefined") for line in loaded.console)
    assert "bad" in loaded.console


def test_report_draws_the_two_objective_front_in_chromium(
    sweep: Sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    report = sweep.out / "report.html"
    code, _out, err = _cli(
        capsys, "compare", sweep.name, "--out", str(sweep.out), "--html", str(report)
    )
    assert code == 0, err
    # Offline: nothing is fetched (plotly's bundle names CDN addresses of optional features).
    rest = report.read_text(encoding="utf-8").replace(get_plotlyjs(), "")
    assert "<script src" not in rest and 'href="http' not in rest
    page = load(report)
    assert page.console == []
    marks = _marks(page.dom)
    circles = {int(str(a["data-trial"])): a for tag, a in marks if tag == "circle"}
    assert set(circles) == {0, 1, 2, 3, 6, 7}, "every complete trial, and only those"
    assert {n for n, a in circles.items() if a["data-front"] == "true"} == set(FRONT)
    assert circles[3]["data-rank"] == "infeasible" and circles[2]["data-rank"] == "1"
    (line,) = [a for tag, a in marks if tag == "polyline" and a.get("data-front-line")]
    # Along the first objective from best: 7, then 1 and 6 (equal), then 0; one corner between.
    assert line["data-trials"] == "7 1 6 0"
    assert len(str(line["points"]).split()) == 2 * len(FRONT) - 1
    rows = {int(str(a["data-trial"])) for tag, a in marks if tag == "tr"}
    assert not rows  # table rows carry data-number; the plot alone carries data-trial
    assert re.search(r'<tr data-number="7" data-front="true" class="front">', page.dom)
    assert "plotly" in page.dom.lower()  # Optuna's plots (on the first objective) render too
    assert 'id="tf-history"' in page.dom


def test_report_draws_three_objectives_as_parallel_coordinates(tmp_path: Path) -> None:
    from tunefleet.platform.report import write_html

    rng = random.Random(7)
    study = optuna.create_study(
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        directions=["maximize", "minimize", "minimize"],
    )
    for _ in range(25):
        trial = study.ask(SPACE)
        trial.set_constraint(CONSTRAINT, rng.choice([-1.0, -1.0, -1.0, 2.0]))
        study.tell(trial, [rng.random(), rng.choice([1e5, 2e5, 4e5]), rng.uniform(5, 30)])
    study.tell(study.ask(SPACE), state=TrialState.PRUNED)
    report = write_html(
        tmp_path / "three.html",
        study=study,
        title="three <objectives>",
        metric="eval_accuracy",
        direction="maximize",
        curves=[],
        objectives=[
            ("eval_accuracy", "maximize"),
            ("trainable_params", "minimize"),
            ("latency_ms", "minimize"),
        ],
    )
    page = load(report)
    assert page.console == []
    lines = {int(str(a["data-trial"])): a for tag, a in _marks(page.dom) if tag == "polyline"}
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert set(lines) == {t.number for t in complete}
    assert {n for n, a in lines.items() if a["data-front"] == "true"} == {
        t.number for t in study.best_trials
    }
    ranks = front_of(complete, [ACC, PARAMS, LATENCY]).ranks
    infeasible = {t.number for t in complete if t.constraints[CONSTRAINT] > 0}
    assert infeasible
    for number, attrs in lines.items():
        expected = "infeasible" if number in infeasible else str(ranks[number])
        assert attrs["data-rank"] == expected
        assert len(str(attrs["points"]).split()) == 3  # one point per axis
    assert "three &lt;objectives&gt;" in page.dom


# --- promote ---------------------------------------------------------------------------------


def test_promote_without_a_choice_lists_the_front(
    sweep: Sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = _cli(capsys, "promote", sweep.name, "--out", str(sweep.out))
    assert code == 2
    assert (
        "choose with --trial N, or with --prefer METRIC (one of eval_accuracy, trainable_params)"
        in err
    )
    listed = re.findall(r"trial (\d+): eval_accuracy=([\d.]+), trainable_params=(\d+)", err)
    assert listed == [
        ("7", "0.88", "400000"),
        ("1", "0.85", "300000"),
        ("6", "0.85", "300000"),
        ("0", "0.8", "100000"),
    ]
    code, _out, err = _cli(
        capsys, "promote", sweep.name, "--out", str(sweep.out), "--prefer", "latency_ms"
    )
    assert code == 2
    assert (
        "'latency_ms' is not an objective of this sweep; one of eval_accuracy, trainable_params"
        in err
    )
    code, _out, err = _cli(capsys, "promote", sweep.name, "--out", str(sweep.out), "--trial", "4")
    assert code == 2 and "has no checkpoint to promote (state PRUNED)" in err
    code, _out, err = _cli(
        capsys, "promote", sweep.name, "--out", str(sweep.out), "--trial", "7", "--prefer", "x"
    )
    assert code == 2 and "pass either --trial N or --prefer METRIC, not both" in err
    assert _promotions(sweep) == {}


def test_promote_prefer_and_trial_choose_and_record(
    sweep: Sweep, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = str(sweep.out)
    # A plain alias move (--alias): the gated champion flow needs MLflow and real models.
    code, out, err = _cli(
        capsys,
        "promote",
        sweep.name,
        "--out",
        out_dir,
        "--prefer",
        "trainable_params",
        "--alias",
        "lightest",
    )
    assert code == 0, err
    assert out.startswith("promoted mo trial 0 as @lightest")
    assert "chosen by --prefer trainable_params among the Pareto front" in out
    code, out, err = _cli(
        capsys,
        "promote",
        sweep.name,
        "--out",
        out_dir,
        "--prefer",
        "eval_accuracy",
        "--alias",
        "accurate",
    )
    assert code == 0, err
    assert out.startswith("promoted mo trial 7 as @accurate")
    code, out, err = _cli(
        capsys, "promote", sweep.name, "--out", out_dir, "--trial", "2", "--alias", "small"
    )
    assert code == 0, err
    assert "note: trial 2 is not on the Pareto front (another trial dominates it)" in out
    code, out, err = _cli(
        capsys, "promote", sweep.name, "--out", out_dir, "--trial", "3", "--alias", "big"
    )
    assert code == 0, err
    assert "note: trial 3 is not on the Pareto front (it broke a constraint)" in out
    code, out, err = _cli(
        capsys, "promote", sweep.name, "--out", out_dir, "--trial", "1", "--alias", "mid"
    )
    assert code == 0, err
    assert "not on the Pareto front" not in out
    chosen = _promotions(sweep)
    checkpoints = sweep.out / "checkpoints" / sweep.name
    assert chosen == {
        alias: (n, str(checkpoints / f"trial-{n}"))
        for alias, n in [("lightest", 0), ("accurate", 7), ("small", 2), ("big", 3), ("mid", 1)]
    }


def test_report_of_several_objectives_needs_them_named_in_order(tmp_path: Path) -> None:
    from tunefleet.platform.report import render_html

    study = optuna.create_study(directions=["maximize", "minimize"])
    study.tell(study.ask(SPACE), [0.5, 1e5])
    for objectives in ((), [("trainable_params", "minimize"), ("eval_accuracy", "maximize")]):
        with pytest.raises(
            ValueError, match=r"disagree with the study's \['maximize', 'minimize'\]"
        ):
            render_html(
                study=study,
                title="t",
                metric="eval_accuracy",
                direction="maximize",
                curves=[],
                objectives=objectives,
            )


def test_the_launchers_progress_line_counts_the_front(sweep: Sweep) -> None:
    from tunefleet.platform.launcher import progress_line

    study = optuna.load_study(
        study_name=sweep.name, storage=f"sqlite:///{sweep.out / 'tunefleet.db'}"
    )
    line = progress_line(study, len(TRIALS), started=0.0)
    assert line.endswith("· pruned 1 · failed 1 · front 4"), line
