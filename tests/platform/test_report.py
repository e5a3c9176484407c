"""The HTML comparison report, rendered from real Optuna studies."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from plotly.offline import get_plotlyjs

from tunefleet.platform.report import TrialCurve, render_html, write_html

optuna.logging.set_verbosity(optuna.logging.WARNING)

_PLOTLY_BANNER = "* plotly.js v"


class _TableRows(HTMLParser):
    """Collects the cell texts of each body row of ``table.trials``."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self.header: list[str] = []
        self._in_table = False
        self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("class", "trials") in attrs:
            self._in_table = True
        elif self._in_table and tag == "tbody":
            self._in_body = True
        elif self._in_table and tag == "tr" and self._in_body:
            self.rows.append([])
        elif self._in_table and tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._in_table = False
        elif tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell)
            (self.rows[-1] if self._in_body else self.header).append(text)
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _objective(trial: optuna.Trial) -> float:
    lr = trial.suggest_float("lr", 1e-5, 1e-2, log=True)
    optimizer = trial.suggest_categorical("optimizer", ["adamw", "sgd"])
    loss = (lr - 1e-3) ** 2 * 1e4 + (0.1 if optimizer == "sgd" else 0.0)
    if optimizer == "sgd":
        # Conditional param: only SGD trials have it.
        momentum = trial.suggest_float("momentum", 0.0, 0.99)
        loss += (0.9 - momentum) ** 2
    if trial.number == 3:
        trial.report(loss + 5.0, step=1)
        raise optuna.TrialPruned()
    return loss


def _curves(study: optuna.Study, *, skip_points: int | None = None) -> list[TrialCurve]:
    curves = []
    for t in study.trials:
        points = (
            [] if t.number == skip_points else [(s, 2.0 / (s + 1) + t.number) for s in range(5)]
        )
        evals = [(s, float(t.number) + s / 10) for s in (2, 4)] if t.number % 2 == 0 else []
        curves.append(
            TrialCurve(
                number=t.number,
                state=t.state.name,
                value=t.value,
                params=dict(t.params),
                points=points,
                eval_points=evals,
            )
        )
    return curves


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    s = optuna.create_study(
        study_name="report-test",
        direction="minimize",
        sampler=optuna.samplers.RandomSampler(seed=7),
    )
    s.optimize(_objective, n_trials=6)
    return s


def test_report_is_self_contained_ordered_and_escaped(study: optuna.Study, tmp_path: Path) -> None:
    title = "<script>alert('x')</script> sweep & co"
    out = write_html(
        tmp_path / "nested" / "dir" / "report.html",
        study=study,
        title=title,
        metric="eval_loss",
        direction="minimize",
        curves=_curves(study, skip_points=5),
    )
    assert out == tmp_path / "nested" / "dir" / "report.html"
    assert out.is_file()
    text = out.read_text(encoding="utf-8")

    # Self-contained: the bundle inlined exactly once, nothing fetched outside it (the bundle
    # itself mentions CDN addresses for optional features, so look outside it).
    bundle = get_plotlyjs()
    assert text.count(bundle) == 1
    assert text.count(_PLOTLY_BANNER) == 1
    rest = text.replace(bundle, "")
    assert "<script src" not in rest
    assert 'src="http' not in rest
    assert "https://cdn" not in rest

    # Escaping: the user's title never reaches the page as markup.
    assert "<script>alert(" not in text
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; sweep &amp; co" in text

    # Plots, in order.
    ids = ["tf-history", "tf-parallel", "tf-importances", "tf-loss", "tf-eval"]
    positions = [text.index(f'id="{i}"') for i in ids]
    assert positions == sorted(positions)
    assert "Optimization History Plot" in text
    assert "Parallel Coordinate Plot" in text
    assert "Hyperparameter Importances" in text
    assert "Training loss per trial" in text
    assert "eval_loss per evaluation" in text
    for n in range(5):
        assert f'"name":"trial-{n}"' in text
    assert '"name":"trial-5"' not in text.split('id="tf-eval"')[0]  # no loss points
    assert "No training-loss points logged for trial(s): 5." in text

    # Table: best first, pruned after all complete trials, conditional param left empty.
    parser = _TableRows()
    parser.feed(text)
    assert parser.header[:3] == ["number", "state", "value"]
    assert set(parser.header[3:]) == {"lr", "optimizer", "momentum"}
    numbers = [int(r[0]) for r in parser.rows]
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    expected = [t.number for t in sorted(complete, key=lambda t: (t.value, t.number))]
    assert numbers == [*expected, 3]
    assert parser.rows[-1][1] == "PRUNED"
    assert numbers[0] == study.best_trial.number
    momentum_col = parser.header.index("momentum")
    for row in parser.rows:
        trial = study.trials[int(row[0])]
        assert (row[momentum_col] == "") == ("momentum" not in trial.params)


def test_single_complete_trial_renders_notes_instead_of_plots() -> None:
    study = optuna.create_study(direction="maximize")
    study.optimize(lambda t: t.suggest_float("x", 0.0, 1.0), n_trials=1)
    curve = TrialCurve(0, "COMPLETE", study.trials[0].value, {}, points=[], eval_points=[])

    text = render_html(
        study=study, title="one", metric="accuracy", direction="maximize", curves=[curve]
    )

    assert "Parameter importances needs at least two complete trials" in text
    assert "No training-loss points were logged." in text
    assert 'id="tf-importances"' not in text
    assert 'id="tf-eval"' not in text
    # The history plot still carries the one bundle.
    assert text.count(_PLOTLY_BANNER) == 1


def test_study_without_params_and_trials() -> None:
    empty = optuna.create_study()
    text = render_html(study=empty, title="t", metric="m", direction="minimize", curves=[])
    assert "No complete trial yet." in text
    assert "The study has no parameters." in text
    assert _PLOTLY_BANNER not in text

    constant = optuna.create_study()
    constant.optimize(lambda t: 1.0, n_trials=3)
    text = render_html(study=constant, title="t", metric="m", direction="minimize", curves=[])
    assert "The study has no parameters." in text


def test_direction_must_match_the_study(study: optuna.Study) -> None:
    with pytest.raises(ValueError, match="disagrees"):
        render_html(study=study, title="t", metric="m", direction="maximize", curves=[])
    with pytest.raises(ValueError, match="must be one of"):
        render_html(study=study, title="t", metric="m", direction="lower", curves=[])
