"""``status`` and ``compare``: the sweep's trials from Optuna (the truth about states) joined
with what the store adds (tracking ids, checkpoints, metrics, curves)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tunefleet.config import SweepConfig
from tunefleet.errors import NotFoundError
from tunefleet.platform.cost import DEVICES, SweepCost, sweep_cost
from tunefleet.platform.layout import Layout
from tunefleet.platform.pareto import Front, front_of
from tunefleet.platform.progress import Running, SweepProgress, duration, sweep_progress
from tunefleet.platform.retention import (
    Plan,
    Policy,
    cell_text,
    held_files,
    plan,
    rank_complete,
    summary_json,
    summary_line,
    trial_cells,
)
from tunefleet.platform.store import PinRecord, PromotionRecord, Store, TrialRecord
from tunefleet.search.study import make_storage
from tunefleet.search.warm_start import OwnTrialsStudy, best_own, history_summary


@dataclass(frozen=True)
class SweepView:
    config: SweepConfig
    study: optuna.Study
    records: dict[int, TrialRecord]
    budget: int
    layout: Layout | None = None
    """Where the sweep's files are (for retention's columns); None: not shown."""
    pins: list[PinRecord] = field(default_factory=list)
    promotions: list[PromotionRecord] = field(default_factory=list)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False)

    @property
    def multi_objective(self) -> bool:
        # The study's own directions, not the config: Optuna's best_trial raises on a study
        # of several objectives whatever the config says.
        return len(self.study.directions) > 1

    def best(self) -> FrozenTrial | None:
        """The best complete feasible trial of this sweep (never a warm start's history);
        None in a multi-objective sweep, which has a front (:meth:`front`) instead of one best."""
        if self.multi_objective:
            return None
        return best_own(self.study)

    def front(self) -> Front:
        """The Pareto front ranks of the feasible complete trials (``platform.pareto``)."""
        return front_of(self.trials, self.config.search.all_objectives)

    @cached_property
    def retention(self) -> Plan | None:
        """What gc would do now (checkpoint sizes and verdicts); None without a layout."""
        if self.layout is None:
            return None
        records = list(self.records.values())
        return plan(
            records=records,
            held=held_files(self.layout, self.config.name),
            pins=self.pins,
            promotions=self.promotions,
            ranking=rank_complete(records, self.config.search.all_objectives),
            policy=Policy.of(self.config.checkpoints),
        )

    @cached_property
    def cost(self) -> SweepCost:
        """Every attempt's compute at one instant, so that the figures shown add up."""
        return sweep_cost(self.trials, self.config.search.budget)


def open_view(store: Store, name: str, db_url: str, *, layout: Layout | None = None) -> SweepView:
    sweep = store.get_sweep(name)
    try:
        # Without the trials copied from an earlier sweep (search.warm_start: history): every
        # count, plot and best shown is this sweep's own.
        study: optuna.Study = OwnTrialsStudy(study_name=name, storage=make_storage(db_url))
    except KeyError:
        raise NotFoundError(f"no Optuna study named {name!r} in {db_url}") from None
    return SweepView(
        SweepConfig.model_validate(sweep.config),
        study,
        {r.number: r for r in store.trials(name)},
        sweep.budget,
        layout,
        pins=store.pins(name),
        promotions=store.promotions(name),
    )


def progress(view: SweepView) -> SweepProgress:
    """The running trials' progress; the sweep's ETA over as many workers as trials run now."""
    running = sum(t.state == TrialState.RUNNING for t in view.trials)
    return sweep_progress(view.trials, view.records, budget=view.budget, workers=running)


def trial_json(
    view: SweepView,
    trial: FrozenTrial,
    running: Running | None = None,
    *,
    front: Front | None = None,
) -> dict[str, Any]:
    """One trial; in a multi-objective sweep (``front`` given) also its ``values`` in
    objectives order, whether it is on the ``front`` and whether it is ``feasible``."""
    record = view.records.get(trial.number)
    seconds = record.seconds if record and record.seconds is not None else _duration(trial)
    data = {
        "number": trial.number,
        "state": trial.state.name,
        "params": record.params if record and record.params else trial.params,
        "value": None if view.multi_objective else trial.value,
        "mlflow_run_id": record.mlflow_run_id if record else None,
        "wandb_run_id": record.wandb_run_id if record else None,
        "checkpoint": record.checkpoint if record else None,
        "seconds": seconds,
        "live": record.live if record and trial.state == TrialState.RUNNING else None,
        "attempt": record.attempt if record else 1,
        "retry_of": record.retry_of if record else None,
        "reason": record.reason if record else None,
        "reason_detail": record.reason_detail if record else None,
        "requeued": record.requeued if record else False,
        "progress": None if running is None else running.json(),
        "compute": _trial_compute(view, trial),
    }
    if view.retention is not None:
        cell = trial_cells(view.retention, list(view.records.values())).get(trial.number)
        data["checkpoint_bytes"] = None if cell is None else cell["bytes"]
        data["checkpoint_retention"] = None if cell is None else cell["retention"]
    if front is not None:
        data.update(_front_json(front, trial))
    return data


def _front_json(front: Front, trial: FrozenTrial) -> dict[str, Any]:
    complete = trial.state == TrialState.COMPLETE
    return {
        "values": trial.values if complete else None,
        "front": front.on_front(trial.number),
        "feasible": (trial.number not in front.infeasible) if complete else None,
    }


def _trial_compute(view: SweepView, trial: FrozenTrial) -> dict[str, Any] | None:
    """What the attempt spent (a running one's so far), and its money with a price."""
    cost = view.cost.attempts.get(trial.number)
    if cost is None:
        return None
    return {
        "device": cost.device,
        "units": cost.units,
        "device_seconds": cost.device_seconds,
        "device_hours": cost.hours,
        "money": view.cost.money(cost),
    }


def compute_json(view: SweepView) -> dict[str, Any]:
    """Per device: spent (the trials' device-seconds summed), limit and remaining; and the
    sweep's cost to reach its best (single-objective sweeps only)."""
    best = view.best() if len(view.study.directions) == 1 else None
    return {**view.cost.json(), "to_best": None if best is None else view.cost.to_best(best)}


def cost_lines(view: SweepView) -> list[str]:
    """``cpu-hours: 0.0123 spent of 0.0333, 0.021 left; cost 0.06`` for each device with a
    budget or a spend, then the cost to reach the best."""
    shown, lines = compute_json(view), []
    for device in DEVICES:
        figures = shown[f"{device}_hours"]
        if figures["limit"] is None and not figures["spent"]:
            continue
        line = f"{device}-hours: {_fmt(figures['spent'])} spent"
        if figures["limit"] is not None:
            line += f" of {_fmt(figures['limit'])}, {_fmt(figures['remaining'])} left"
        if figures["money"] is not None:
            line += f"; cost {_fmt(figures['money'])}"
        lines.append(line)
    to_best = shown["to_best"]
    if to_best is not None:
        spent = [
            f"{_fmt(to_best[f'{d}_hours'])} {d}-hours" for d in DEVICES if to_best[f"{d}_hours"]
        ]
        line = f"to reach the best (trial {to_best['trial']}): {', '.join(spent) or 'unknown'}"
        if to_best["money"] is not None:
            line += f"; cost {_fmt(to_best['money'])}"
        lines.append(line)
    if view.retention is not None and view.config.checkpoints.configured:
        lines.append(summary_line(view.retention, view.config.checkpoints))
    return lines


def _value_cell(view: SweepView, trial: FrozenTrial, record: TrialRecord | None) -> str:
    """A running trial shows its latest objective from the store's live summary, with its step."""
    value = trial.values[0] if trial.values else None
    if value is not None or record is None or not record.live:
        return _fmt(value)
    latest = record.live.get("metrics", {}).get(view.config.search.metric)
    return "-" if latest is None else f"{_fmt(latest)} @{record.live.get('step')}"


def _duration(trial: FrozenTrial) -> float | None:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return None


def status_json(view: SweepView) -> dict[str, Any]:
    best = view.best()
    record = view.records.get(best.number) if best else None
    now = progress(view)
    runs = {r.number: r for r in now.runs}
    front = view.front() if view.multi_objective else None
    data = {
        "name": view.config.name,
        "budget": view.budget,
        "compute": compute_json(view),
        "eta_s": now.eta_s,
        "trials": [trial_json(view, t, runs.get(t.number), front=front) for t in view.trials],
        "history": history_json(view),
        "best": None
        if best is None
        else {
            "number": best.number,
            "value": best.value,
            "params": record.params if record and record.params else best.params,
            "checkpoint": record.checkpoint if record else None,
        },
    }
    if view.retention is not None:
        data["checkpoints"] = summary_json(view.retention, view.config.checkpoints)
    if front is not None:
        data["objectives"] = [
            {"metric": o.metric, "direction": o.direction} for o in front.objectives
        ]
        data["pareto_front"] = front.members
    return data


def history_json(view: SweepView) -> dict[str, Any] | None:
    """The earlier sweep's trials the sampler was given (search.warm_start: history)."""
    history = history_summary(view.study)
    return None if history is None else {"from": history[0], "trials": history[1]}


_STATE_ORDER = {
    TrialState.COMPLETE: 0,
    TrialState.PRUNED: 1,
    TrialState.RUNNING: 2,
    TrialState.WAITING: 2,
    TrialState.FAIL: 3,
}


def sorted_trials(view: SweepView, front: Front | None = None) -> list[FrozenTrial]:
    """Complete trials best first, then pruned, running and failed ones; in a multi-objective
    sweep (``front`` given) the front first, then by front rank, infeasible ones last of the
    complete."""
    if front is not None:
        return sorted(view.trials, key=lambda t: _front_order(front, t))
    sign = -1.0 if view.config.search.direction == "maximize" else 1.0
    return sorted(
        view.trials, key=lambda t: (_STATE_ORDER[t.state], sign * (t.value or 0.0), t.number)
    )


def _front_order(front: Front, trial: FrozenTrial) -> tuple[int, int, float, int]:
    if trial.number in front.ranks:
        return (0, *front.order_key(trial.number))
    if trial.number in front.infeasible:
        return (1, 0, 0.0, trial.number)
    return (2 + _STATE_ORDER[trial.state], 0, 0.0, trial.number)


def table(view: SweepView) -> str:
    metric = view.config.search.metric
    params = sorted(
        {k for r in view.records.values() for k in r.params}
        | {k for t in view.trials for k in t.params}
    )
    runs = {r.number: r for r in progress(view).runs}
    front = view.front() if view.multi_objective else None
    objectives = [metric] if front is None else ["front", *(o.metric for o in front.objectives)]
    priced = any(view.cost.price(d) is not None for d in DEVICES)
    cost = ["device-h", *(["cost"] if priced else [])]
    header = ["trial", "state", *objectives, "test_accuracy", "seconds", *cost, "attempt", "reason"]
    retained = (
        None if view.retention is None else trial_cells(view.retention, [*view.records.values()])
    )
    retained = retained or None  # shown once a trial has a checkpoint
    header += [] if retained is None else ["checkpoint"]
    header += params
    if runs:
        header.insert(2, "progress")
    rows = [header]
    for trial in sorted_trials(view, front):
        record = view.records.get(trial.number)
        values = record.params if record and record.params else trial.params
        test = record.metrics.get("test_accuracy") if record else None
        rows.append(
            [
                str(trial.number),
                trial.state.name,
                *_objective_cells(view, trial, record, front),
                _fmt(test),
                _fmt(trial_json(view, trial)["seconds"], 1),
                *_cost_cells(view, trial, priced=priced),
                _attempt_cell(record),
                _reason_cell(record),
                *([] if retained is None else [cell_text(retained.get(trial.number))]),
                *(_fmt(values.get(p)) for p in params),
            ]
        )
        if runs:
            rows[-1].insert(2, _progress_cell(runs.get(trial.number)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _objective_cells(
    view: SweepView, trial: FrozenTrial, record: TrialRecord | None, front: Front | None
) -> list[str]:
    """The objective's cell; in a multi-objective sweep a front marker (``*`` on the front,
    ``infeasible`` for a complete trial that broke a constraint) and one cell per objective."""
    first = _value_cell(view, trial, record)
    if front is None:
        return [first]
    marker = "*" if front.on_front(trial.number) else "-"
    if trial.number in front.infeasible:
        marker = "infeasible"
    rest = trial.values[1:] if trial.values else [None] * (len(front.objectives) - 1)
    return [marker, first, *(_fmt_measured(v) for v in rest)]


def _fmt_measured(value: float | None) -> str:
    """Counts (trainable_params) as integers; other values as :func:`_fmt` writes them."""
    if value is not None and float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return _fmt(value)


def _cost_cells(view: SweepView, trial: FrozenTrial, *, priced: bool) -> list[str]:
    """``0.0012 cpu`` (device-hours), and its money where the sweep has a price."""
    cost = view.cost.attempts.get(trial.number)
    cells = ["-" if cost is None else f"{_fmt(cost.hours)} {cost.device}"]
    if priced:
        cells.append("-" if cost is None else _fmt(view.cost.money(cost)))
    return cells


def _progress_cell(run: Running | None) -> str:
    """``40/120 ETA 1m20s w1@node-a`` for a running trial."""
    if run is None:
        return "-"
    if run.total is None:
        return "starting"
    cell = f"{run.step}/{run.total}"
    if run.eta_s is not None:
        cell += f" ETA {duration(run.eta_s)}"
    return f"{cell} w{run.worker}@{run.host}"


def _attempt_cell(record: TrialRecord | None) -> str:
    """``1``, or ``2 of 0`` for the second attempt of logical trial 0."""
    if record is None or record.retry_of is None:
        return "1"
    return f"{record.attempt} of {record.retry_of}"


REASON_WIDTH = 60
"""The reason column's detail is cut here; ``status --json`` has all of it."""


def _reason_cell(record: TrialRecord | None) -> str:
    """Why an attempt failed, and whether it was re-queued: ``stale: ... (retried)``."""
    if record is None or record.reason is None:
        return "-"
    cell = record.reason
    if record.reason_detail:
        detail = record.reason_detail.replace("\n", " ")
        cell += f": {detail[:REASON_WIDTH]}{'...' if len(detail) > REASON_WIDTH else ''}"
    return cell + (" (retried)" if record.requeued else "")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 else f"{value:.{digits}f}"
    return str(value)


def write_report(view: SweepView, path: Path) -> Path:
    from tunefleet.platform.report import TrialCurve, write_html

    metric = view.config.search.metric
    curves = []
    for trial in view.trials:
        record = view.records.get(trial.number)
        history = record.history if record else []
        curves.append(
            TrialCurve(
                number=trial.number,
                state=trial.state.name,
                value=trial.values[0] if trial.values else None,
                params=record.params if record and record.params else dict(trial.params),
                points=[(int(h["step"]), float(h["loss"])) for h in history if "loss" in h],
                eval_points=[(int(h["step"]), float(h[metric])) for h in history if metric in h],
            )
        )
    return write_html(
        path,
        study=view.study,
        title=f"tunefleet sweep {view.config.name}",
        metric=metric,
        direction=view.config.search.direction,
        curves=curves,
        objectives=[(o.metric, o.direction) for o in view.config.search.all_objectives],
    )
