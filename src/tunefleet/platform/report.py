"""Self-contained HTML comparison report for one sweep.

The report is a single file that opens offline: plotly.js is inlined once, and nothing is
fetched from the network. Only optuna and plotly are imported, so a report can be rendered on a
machine without torch. A multi-objective study's report draws its Pareto front as inline SVG
(``platform.report_front``): a scatter for two objectives, parallel coordinates for more.
"""

from __future__ import annotations

import html
import math
import os
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import optuna.visualization as ov
import plotly.graph_objects as go
from optuna.exceptions import ExperimentalWarning
from optuna.trial import FrozenTrial, TrialState

from tunefleet.config import Objective
from tunefleet.platform.pareto import Front, front_of
from tunefleet.platform.report_front import FRONT_CSS, front_svg

__all__ = ["TrialCurve", "render_html", "write_html"]

_DIRECTIONS = ("minimize", "maximize")
# Unfinished and failed trials go after every complete one, pruned ones in between since their
# value is only the last intermediate report.
_STATE_RANK = {
    TrialState.COMPLETE: 0,
    TrialState.PRUNED: 1,
    TrialState.RUNNING: 2,
    TrialState.WAITING: 2,
    TrialState.FAIL: 3,
}
_FIG_HEIGHT = 460

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#222}
h1{margin-bottom:.2rem} .meta{color:#555;margin-top:0}
table.trials{border-collapse:collapse;font-size:.9rem;margin:1rem 0}
table.trials th,table.trials td{border:1px solid #ccc;padding:.25rem .6rem;text-align:right}
table.trials th{background:#f2f4f8;cursor:default}
table.trials th.sorted::after{content:" \\25B2"}
table.trials tr.best td,table.trials tr.front td{background:#eef8ee;font-weight:600}
table.trials td.state{text-align:left}
.note{color:#7a5b00;background:#fff8e1;border-left:4px solid #f0c000;padding:.5rem .8rem}
section{margin:2rem 0}
"""


@dataclass(frozen=True)
class TrialCurve:
    """Logged series of one trial, as the report plots them."""

    number: int
    state: str
    value: float | None
    params: dict[str, Any]
    points: list[tuple[int, float]]
    eval_points: list[tuple[int, float]]


@dataclass(frozen=True)
class _Section:
    heading: str
    div_id: str
    figure: Any | None  # plotly's Figure is untyped
    note: str | None = None
    html: str | None = None
    """Markup drawn without plotly (the Pareto front's SVG)."""


def render_html(
    *,
    study: optuna.Study,
    title: str,
    metric: str,
    direction: str,
    curves: Sequence[TrialCurve],
    objectives: Sequence[tuple[str, str]] = (),
) -> str:
    """Render the comparison report of ``study`` as one self-contained HTML document.

    A multi-objective study needs ``objectives``, (metric, direction) in the study's order;
    ``metric`` is then the first one's, and the front replaces the best trial."""
    if len(study.directions) > 1:
        front = front_of(study.get_trials(deepcopy=False), _check_objectives(study, objectives))
        return _document(title, _multi_body(study, front, title=title, curves=curves))
    direction = _check_direction(study, direction)
    trials = _sort_trials(study.get_trials(deepcopy=False), direction)
    param_names = _param_names(trials)
    sections = [
        _history_section(study),
        _parallel_section(study, param_names),
        _importances_section(study),
        _loss_section(curves),
    ]
    if any(c.eval_points for c in curves):
        sections.append(_eval_section(curves, metric))
    body = [
        _header_html(trials, title=title, metric=metric, direction=direction),
        _table_html(trials, param_names),
        _sections_html(sections),
    ]
    return _document(title, body)


def _document(title: str, body: Sequence[str]) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_esc(title)}</title>\n<style>{_CSS}{FRONT_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def _check_objectives(
    study: optuna.Study, objectives: Sequence[tuple[str, str]]
) -> list[Objective]:
    wanted = [d.name.lower() for d in study.directions]
    given = [direction.strip().lower() for _, direction in objectives]
    if given != wanted:
        raise ValueError(
            f"objectives' directions {given} disagree with the study's {wanted}: pass "
            "(metric, direction) for each of the study's objectives, in order"
        )
    return [Objective(metric=m, direction=d) for (m, _), d in zip(objectives, given, strict=True)]


def _multi_body(
    study: optuna.Study, front: Front, *, title: str, curves: Sequence[TrialCurve]
) -> list[str]:
    """A multi-objective report: the front first; Optuna's plots judge the first objective."""
    trials = _front_sorted(study.get_trials(deepcopy=False), front)
    param_names = _param_names(trials)
    primary = front.objectives[0].metric
    target = _first_value
    sections = [
        _Section("Pareto front", "tf-pareto", None, *_front_parts(front)),
        _history_section(study, target=target, target_name=primary),
        _parallel_section(study, param_names, target=target, target_name=primary),
        _importances_section(study, target=target, target_name=primary),
        _loss_section(curves),
    ]
    if any(c.eval_points for c in curves):
        sections.append(_eval_section(curves, primary))
    return [
        _front_header_html(trials, front, title=title),
        _front_table_html(trials, front, param_names),
        _sections_html(sections),
    ]


def _first_value(trial: FrozenTrial) -> float:
    return float(trial.values[0])


def _front_parts(front: Front) -> tuple[str | None, str | None]:
    """(note, svg) of the front section."""
    if not front.ranks:
        return ("No feasible complete trial yet: the front is empty.", None)
    return front_svg(front)


def _front_sorted(trials: Sequence[FrozenTrial], front: Front) -> list[FrozenTrial]:
    def key(t: FrozenTrial) -> tuple[int, int, float, int]:
        if t.number in front.ranks:
            return (0, *front.order_key(t.number))
        if t.number in front.infeasible:
            return (1, 0, 0.0, t.number)
        return (2 + _STATE_RANK.get(t.state, 2), 0, 0.0, t.number)

    return sorted(trials, key=key)


def _front_header_html(trials: Sequence[FrozenTrial], front: Front, *, title: str) -> str:
    counts = Counter(t.state.name for t in trials)
    count_text = ", ".join(f"{_esc(state)}: {n}" for state, n in sorted(counts.items()))
    objectives = ", ".join(
        f"<b>{_esc(o.metric)}</b> ({_esc(o.direction)})" for o in front.objectives
    )
    members = front.members
    if members:
        front_html = (
            f'<p class="best">Pareto front: {len(members)} trial(s): '
            + ", ".join(f"<b>#{n}</b>" for n in members)
            + "</p>"
        )
    else:
        front_html = '<p class="note">No feasible complete trial yet.</p>'
    infeasible = (
        f'<p class="meta">Infeasible (a constraint broken): '
        f"{', '.join(f'#{n}' for n in sorted(front.infeasible))}</p>\n"
        if front.infeasible
        else ""
    )
    return (
        f"<header>\n<h1>{_esc(title)}</h1>\n"
        f'<p class="meta">Objectives: {objectives}</p>\n'
        f'<p class="counts">{len(trials)} trials — {count_text or "none"}</p>\n'
        f"{front_html}\n{infeasible}</header>"
    )


def _front_table_html(
    trials: Sequence[FrozenTrial], front: Front, param_names: Sequence[str]
) -> str:
    head_cells = ["<th>number</th>", "<th>state</th>", "<th>front</th>"]
    head_cells += [f"<th>{_esc(o.metric)}</th>" for o in front.objectives]
    head_cells += [f"<th>{_esc(name)}</th>" for name in param_names]
    rows = []
    for t in trials:
        on_front = front.on_front(t.number)
        marker = "*" if on_front else ("infeasible" if t.number in front.infeasible else "")
        values = t.values if t.state == TrialState.COMPLETE and t.values else []
        cells = [
            f"<td>{t.number}</td>",
            f'<td class="state">{_esc(t.state.name)}</td>',
            f"<td>{marker}</td>",
        ]
        cells += [
            f"<td>{_esc(_fmt(values[i] if values else None))}</td>"
            for i in range(len(front.objectives))
        ]
        cells += [f"<td>{_esc(_fmt(t.params.get(name)))}</td>" for name in param_names]
        cls = ' class="front"' if on_front else ""
        rows.append(
            f'<tr data-number="{t.number}" data-front="{str(on_front).lower()}"{cls}>'
            f"{''.join(cells)}</tr>"
        )
    return (
        '<section>\n<h2>Trials (front first)</h2>\n<table class="trials">\n'
        f"<thead><tr>{''.join(head_cells)}</tr></thead>\n"
        f"<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>\n</section>"
    )


def write_html(
    path: str | os.PathLike[str],
    *,
    study: optuna.Study,
    title: str,
    metric: str,
    direction: str,
    curves: Sequence[TrialCurve],
    objectives: Sequence[tuple[str, str]] = (),
) -> Path:
    """Write :func:`render_html`'s output to ``path``, creating parent directories."""
    out = Path(path)
    text = render_html(
        study=study,
        title=title,
        metric=metric,
        direction=direction,
        curves=curves,
        objectives=objectives,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return out


def _check_direction(study: optuna.Study, direction: str) -> str:
    normalized = direction.strip().lower()
    if normalized not in _DIRECTIONS:
        raise ValueError(f"direction must be one of {_DIRECTIONS}, got {direction!r}")
    if len(study.directions) != 1:
        raise ValueError("the report supports single-objective studies only")
    # Optuna's plots rank by the study's own direction; a different one here would make the
    # table and the plots disagree about which trial is best.
    study_direction = study.direction.name.lower()
    if study_direction != normalized:
        raise ValueError(f"direction {normalized!r} disagrees with the study's {study_direction!r}")
    return normalized


def _sort_key(direction: str) -> Callable[[FrozenTrial], tuple[int, int, float, int]]:
    sign = 1.0 if direction == "minimize" else -1.0

    def key(t: FrozenTrial) -> tuple[int, int, float, int]:
        value = t.value if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else None
        has_value = value is not None and not math.isnan(value)
        ordered = sign * value if has_value and value is not None else 0.0
        return (_STATE_RANK.get(t.state, 2), 0 if has_value else 1, ordered, t.number)

    return key


def _sort_trials(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    return sorted(trials, key=_sort_key(direction))


def _param_names(trials: Sequence[FrozenTrial]) -> list[str]:
    # First-seen order keeps the columns stable when a conditional param shows up late.
    seen: dict[str, None] = {}
    for t in sorted(trials, key=lambda t: t.number):
        for name in t.params:
            seen.setdefault(name, None)
    return list(seen)


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _best(trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    if trials and trials[0].state == TrialState.COMPLETE and trials[0].value is not None:
        return trials[0]
    return None


def _header_html(trials: Sequence[FrozenTrial], *, title: str, metric: str, direction: str) -> str:
    counts = Counter(t.state.name for t in trials)
    count_text = ", ".join(f"{_esc(state)}: {n}" for state, n in sorted(counts.items()))
    best = _best(trials)
    if best is None:
        best_html = '<p class="note">No complete trial yet.</p>'
    else:
        params = ", ".join(f"{_esc(k)}={_esc(_fmt(v))}" for k, v in best.params.items())
        best_html = (
            f'<p class="best">Best trial: <b>#{best.number}</b>, '
            f"{_esc(metric)} = <b>{_esc(_fmt(best.value))}</b>"
            f"{' — ' + params if params else ''}</p>"
        )
    return (
        f"<header>\n<h1>{_esc(title)}</h1>\n"
        f'<p class="meta">Objective: <b>{_esc(metric)}</b> ({_esc(direction)})</p>\n'
        f'<p class="counts">{len(trials)} trials — {count_text or "none"}</p>\n'
        f"{best_html}\n</header>"
    )


def _table_html(trials: Sequence[FrozenTrial], param_names: Sequence[str]) -> str:
    head_cells = ["<th>number</th>", "<th>state</th>", '<th class="sorted">value</th>']
    head_cells += [f"<th>{_esc(name)}</th>" for name in param_names]
    best = _best(trials)
    rows = []
    for t in trials:
        cls = ' class="best"' if best is not None and t.number == best.number else ""
        cells = [
            f"<td>{t.number}</td>",
            f'<td class="state">{_esc(t.state.name)}</td>',
            f"<td>{_esc(_fmt(t.value))}</td>",
        ]
        # A trial lacking a param (conditional search spaces) gets an empty cell, not "None".
        cells += [f"<td>{_esc(_fmt(t.params.get(name)))}</td>" for name in param_names]
        rows.append(f'<tr data-number="{t.number}"{cls}>{"".join(cells)}</tr>')
    return (
        '<section>\n<h2>Trials (best first)</h2>\n<table class="trials">\n'
        f"<thead><tr>{''.join(head_cells)}</tr></thead>\n"
        f"<tbody>\n{chr(10).join(rows)}\n</tbody>\n</table>\n</section>"
    )


@contextmanager
def _quiet_optuna(*, importances: bool = False) -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        if importances:
            # PED-ANOVA warns about small samples on every sweep of a few trials; the report
            # is read by people, and the plot is still the best estimate available.
            warnings.simplefilter("ignore", UserWarning)
        yield


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _safe_figure(
    heading: str, div_id: str, build: Callable[[], Any], *, importances: bool = False
) -> _Section:
    # One plot failing on an edge case Optuna does not guard must not cost the whole report.
    try:
        with _quiet_optuna(importances=importances):
            figure = build()
    except (ValueError, RuntimeError, ZeroDivisionError) as exc:
        return _Section(heading, div_id, None, f"Could not draw this plot: {exc}")
    return _Section(heading, div_id, figure)


Target = Callable[[FrozenTrial], float] | None
"""What Optuna's plots show of a trial: None for a single-objective study's value; a
multi-objective study's plots are drawn on its first objective."""


def _history_section(
    study: optuna.Study, *, target: Target = None, target_name: str = "Objective Value"
) -> _Section:
    heading, div_id = "Optimization history", "tf-history"
    if not _complete(study):
        return _Section(heading, div_id, None, "No complete trials yet.")
    return _safe_figure(
        heading,
        div_id,
        lambda: ov.plot_optimization_history(study, target=target, target_name=target_name),
    )


def _parallel_section(
    study: optuna.Study,
    param_names: Sequence[str],
    *,
    target: Target = None,
    target_name: str = "Objective Value",
) -> _Section:
    heading, div_id = "Parallel coordinate", "tf-parallel"
    if not param_names:
        return _Section(heading, div_id, None, "The study has no parameters.")
    if not any(t.params for t in _complete(study)):
        return _Section(heading, div_id, None, "No complete trials with parameters yet.")
    return _safe_figure(
        heading,
        div_id,
        lambda: ov.plot_parallel_coordinate(study, target=target, target_name=target_name),
    )


def _varying_params(trials: Sequence[FrozenTrial]) -> list[str]:
    names = {name for t in trials for name in t.params}
    # A param missing from some trials varies too: its presence is itself a choice.
    return sorted(n for n in names if len({repr(t.params.get(n)) for t in trials}) > 1)


def _importances_blocker(study: optuna.Study) -> str | None:
    complete = _complete(study)
    if not any(t.params for t in study.get_trials(deepcopy=False)):
        return "The study has no parameters."
    if len(complete) < 2:
        return (
            "Parameter importances needs at least two complete trials "
            f"(this study has {len(complete)})."
        )
    if not _varying_params(complete):
        return "Parameter importances needs at least one parameter that varies across trials."
    return None


def _importances_section(
    study: optuna.Study, *, target: Target = None, target_name: str = "Objective Value"
) -> _Section:
    heading, div_id = "Parameter importances", "tf-importances"
    blocker = _importances_blocker(study)
    if blocker is not None:
        return _Section(heading, div_id, None, blocker)
    return _safe_figure(
        heading,
        div_id,
        lambda: ov.plot_param_importances(study, target=target, target_name=target_name),
        importances=True,
    )


def _lines_figure(
    series: Sequence[tuple[int, Sequence[tuple[int, float]]]],
    *,
    title: str,
    y_title: str,
    mode: str,
) -> Any:
    fig = go.Figure()
    for number, points in series:
        fig.add_trace(
            go.Scatter(
                x=[step for step, _ in points],
                y=[value for _, value in points],
                mode=mode,
                name=f"trial-{number}",
            )
        )
    fig.update_layout(
        title=title, xaxis_title="global step", yaxis_title=y_title, legend_title="trial"
    )
    return fig


def _without_points_note(curves: Sequence[TrialCurve]) -> str | None:
    missing = sorted(c.number for c in curves if not c.points)
    if not missing:
        return None
    return "No training-loss points logged for trial(s): " + ", ".join(map(str, missing)) + "."


def _loss_section(curves: Sequence[TrialCurve]) -> _Section:
    heading, div_id = "Training loss", "tf-loss"
    with_points = sorted((c for c in curves if c.points), key=lambda c: c.number)
    if not with_points:
        return _Section(heading, div_id, None, "No training-loss points were logged.")
    fig = _lines_figure(
        [(c.number, c.points) for c in with_points],
        title="Training loss per trial",
        y_title="training loss",
        mode="lines",
    )
    return _Section(heading, div_id, fig, _without_points_note(curves))


def _eval_section(curves: Sequence[TrialCurve], metric: str) -> _Section:
    with_evals = sorted((c for c in curves if c.eval_points), key=lambda c: c.number)
    fig = _lines_figure(
        [(c.number, c.eval_points) for c in with_evals],
        title=f"{metric} per evaluation",
        y_title=metric,
        mode="lines+markers",
    )
    return _Section(f"{metric} per evaluation", "tf-eval", fig)


def _sections_html(sections: Sequence[_Section]) -> str:
    parts = []
    js_included = False
    for s in sections:
        inner = []
        if s.figure is not None:
            s.figure.update_layout(height=_FIG_HEIGHT)
            # The bundle is ~4 MB: inline it with the first figure only; later divs reuse it.
            div = s.figure.to_html(
                full_html=False,
                include_plotlyjs=not js_included,
                include_mathjax=False,
                div_id=s.div_id,
                config={"displaylogo": False, "showSendToCloud": False},
            )
            js_included = True
            inner.append(str(div))
        if s.html is not None:
            inner.append(s.html)
        if s.note is not None:
            inner.append(f'<p class="note">{_esc(s.note)}</p>')
        parts.append(f"<section>\n<h2>{_esc(s.heading)}</h2>\n{chr(10).join(inner)}\n</section>")
    return "\n".join(parts)
