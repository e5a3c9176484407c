"""``search.warm_start``: a new sweep starts from an earlier sweep's results in the same ``--db``.

``top_k`` enqueues the params of the earlier sweep's best complete trials that fit this sweep's
space (each one that does not is skipped with a line saying which path and value, and what this
space allows); they run first and are this sweep's own trials, budget included. ``history``
copies the earlier sweep's finished trials into this study (``Study.add_trials``) so that the
sampler, and where the curves are comparable the pruner, learn from them; it needs the same
space and the same objectives.

History trials are in the study but are not this sweep's: they never count against its budget,
never become its best (they have no checkpoint here) and are not shown as its trials. Every
reader of the study's trials for counts or best goes through :func:`own_trials`,
:func:`best_own` or :class:`OwnTrialsStudy`. The warm start happens once per sweep: the study
user attr ``warm_started_from`` marks it, so a resumed sweep does not enqueue or copy again.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from tunefleet.config import Dimension, SweepConfig, flatten, method_of_path
from tunefleet.dotted import leaf_annotation
from tunefleet.errors import ConfigError
from tunefleet.search.study import PRIMARY_SUFFIX

KEY = "search.warm_start.from"
"""The config key every refusal names."""
TRIAL_ATTR = "warm_start"
"""Trial user attr: ``{"from": SWEEP, "trial": N}`` (enqueued), plus ``"mode": "history"`` on
a copied trial."""
STUDY_ATTR = "warm_started_from"
"""Study user attr set once the warm start is done: the earlier sweep's name."""
_PRIMITIVES = (str, int, float, bool, type(None))
_RUNG_ATTR = "completed_rung_"
"""Prefix of the system attrs where Optuna's successive halving keeps a trial's rung values."""

Say = Callable[[str], None]


def is_history(trial: FrozenTrial) -> bool:
    """A trial copied from an earlier sweep (``mode: history``): not one this sweep ran."""
    attr = trial.user_attrs.get(TRIAL_ATTR)
    return isinstance(attr, dict) and attr.get("mode") == "history"


def own_trials(
    study: optuna.Study, *, states: Container[TrialState] | None = None
) -> list[FrozenTrial]:
    """The trials this sweep ran (or runs, or will run), without copied history."""
    return [t for t in study.get_trials(deepcopy=False, states=states) if not is_history(t)]


def best_own(study: optuna.Study) -> FrozenTrial | None:
    """This sweep's best complete, feasible trial (never a history one), by the first objective
    (the one that chose each trial's checkpoint); None when there is none."""
    complete = [t for t in own_trials(study, states=(TrialState.COMPLETE,)) if _feasible(t)]
    if not complete:
        return None
    sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
    # Ties go to the earlier trial.
    return max(complete, key=lambda t: (sign * t.values[0], -t.number))


def history_summary(study: optuna.Study) -> tuple[str, int] | None:
    """(the earlier sweep, how many of its trials were copied) for ``status``; None when the
    study holds no history."""
    # Optuna's own get_trials, past an OwnTrialsStudy's filter.
    copied = [t for t in optuna.Study.get_trials(study, deepcopy=False) if is_history(t)]
    if not copied:
        return None
    return str(copied[0].user_attrs[TRIAL_ATTR]["from"]), len(copied)


class OwnTrialsStudy(optuna.Study):
    """A read-only view of a sweep's study without its copied history: what ``status``,
    ``compare``, the report and ``promote`` read, so that every count, plot and best is this
    sweep's own. Never sample from it: the sampler needs the history."""

    def get_trials(
        self, deepcopy: bool = True, states: Container[TrialState] | None = None
    ) -> list[FrozenTrial]:
        trials = super().get_trials(deepcopy=deepcopy, states=states)
        return [t for t in trials if not is_history(t)]

    @property
    def best_trial(self) -> FrozenTrial:
        if len(self.directions) > 1:
            raise RuntimeError("a multi-objective study has no single best trial")
        best = best_own(self)
        if best is None:
            raise ValueError("no trial of this sweep is complete (and feasible) yet")
        return best


# --- planning: every refusal comes before anything is recorded --------------------------------


@dataclass(frozen=True)
class WarmStart:
    """A checked warm start, ready to apply to the new sweep's study."""

    name: str
    """The earlier sweep."""
    mode: str
    top_k: int
    source: SweepConfig
    """The earlier sweep's config."""
    old: optuna.Study

    def apply(self, study: optuna.Study, config: SweepConfig, *, limit: int, say: Say) -> None:
        """Enqueue (top_k, at most ``limit``: the sweep's budget) or copy (history) into
        ``study``, then mark it; a study already marked is left alone."""
        if STUDY_ATTR in study.user_attrs:
            return
        complete = own_trials(self.old, states=(TrialState.COMPLETE,))
        if not complete:
            say(f"warm start: sweep {self.name!r} has no complete trial; starting cold")
        elif self.mode == "top_k":
            enqueue_top_k(study, self, config, limit=min(self.top_k, limit), say=say)
        else:
            add_history(study, self, config, say=say)
        study.set_user_attr(STUDY_ATTR, self.name)


def plan(
    config: SweepConfig,
    *,
    sweeps: Sequence[str],
    source: SweepConfig | None,
    storage: optuna.storages.BaseStorage,
) -> WarmStart | None:
    """The sweep's warm start checked against the earlier sweep, or None (none asked for, or
    already done: a resumed sweep). ``sweeps`` are the sweeps in this ``--db``, ``source`` the
    earlier one's config (None: not there). ConfigError (``search.warm_start.from``) for a sweep
    that is not there, the sweep itself, or (history) a different space or objectives."""
    warm = config.search.warm_start
    if warm is None or _already_done(config.name, storage):
        return None
    name = warm.from_
    if name == config.name:
        raise ConfigError([(KEY, f"{name!r} is this sweep itself; name an earlier sweep")])
    if source is None or name not in sweeps:
        known = ", ".join(s for s in sweeps if s != config.name) or "none"
        raise ConfigError([(KEY, f"no sweep named {name!r} in this --db; sweeps here: {known}")])
    try:
        old = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise ConfigError([(KEY, f"sweep {name!r} has no Optuna study in this --db")]) from None
    if warm.mode == "history":
        _refuse_other_history(config, source)
    return WarmStart(name=name, mode=warm.mode, top_k=warm.top_k, source=source, old=old)


def _already_done(name: str, storage: optuna.storages.BaseStorage) -> bool:
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return False
    return STUDY_ATTR in storage.get_study_user_attrs(study_id)


def _refuse_other_history(config: SweepConfig, source: SweepConfig) -> None:
    """History trials' params and values must mean here what they meant there."""
    problems: list[tuple[str, str]] = []
    differing = space_differences(source.search.space, config.search.space)
    if differing:
        problems.append(
            (
                KEY,
                f"mode history needs the same search.space as {source.name!r}; differing "
                f"dimensions (old vs new): {'; '.join(differing)}",
            )
        )
    old, new = _objectives(source), _objectives(config)
    if old != new:
        problems.append(
            (
                KEY,
                f"mode history needs the same objectives as {source.name!r}: it has "
                f"{', '.join(old)}, this sweep {', '.join(new)}",
            )
        )
    if problems:
        raise ConfigError(problems)


def _objectives(config: SweepConfig) -> list[str]:
    return [f"{o.metric} ({o.direction})" for o in config.search.all_objectives]


def space_differences(old: Mapping[str, Dimension], new: Mapping[str, Dimension]) -> list[str]:
    """``path: old vs new`` for each dimension that is not the same in both spaces."""
    return [
        f"{path}: {describe(old.get(path))} vs {describe(new.get(path))}"
        for path in sorted(set(old) | set(new))
        if old.get(path) != new.get(path)
    ]


def describe(dim: Dimension | None) -> str:
    """A dimension as a user wrote it: ``choices [2, 4]``, ``1e-05..0.001 log``."""
    if dim is None:
        return "not searched"
    if dim.choices is not None:
        return f"choices {json.dumps(dim.choices)}"
    text = f"{dim.low:g}..{dim.high:g}"
    if dim.log:
        text += " log"
    if dim.step is not None:
        text += f" step {dim.step:g}"
    return text


# --- top_k ------------------------------------------------------------------------------------


def ranked(study: optuna.Study) -> list[FrozenTrial]:
    """A study's own complete trials, best first: feasible before infeasible; single objective
    by value in its direction; several objectives: the Pareto front first, each part by the
    first objective. Ties by trial number."""
    complete = own_trials(study, states=(TrialState.COMPLETE,))
    signs = [1.0 if d == StudyDirection.MAXIMIZE else -1.0 for d in study.directions]
    feasible = [t for t in complete if _feasible(t)]
    front = {t.number for t in _front(feasible, signs)} if len(signs) > 1 else set()
    return sorted(
        complete,
        key=lambda t: (not _feasible(t), t.number not in front, -signs[0] * t.values[0], t.number),
    )


def _front(trials: Sequence[FrozenTrial], signs: Sequence[float]) -> list[FrozenTrial]:
    def gains(t: FrozenTrial) -> list[float]:
        return [s * v for s, v in zip(signs, t.values, strict=True)]

    def dominates(a: list[float], b: list[float]) -> bool:
        return all(x >= y for x, y in zip(a, b, strict=True)) and a != b

    scored = [(t, gains(t)) for t in trials]
    return [t for t, g in scored if not any(dominates(h, g) for _, h in scored)]


def _feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0.0 for v in trial.constraints.values())


def enqueue_top_k(
    study: optuna.Study, warm: WarmStart, config: SweepConfig, *, limit: int, say: Say
) -> int:
    """Enqueue the params of the earlier sweep's best ``limit`` complete trials that fit
    ``config``'s space; the others are skipped with a line. Returns how many were enqueued."""
    candidates = ranked(warm.old)
    fixed = flatten(config.model_dump(mode="json", by_alias=True))
    enqueued: dict[str, int] = {}
    for trial in candidates:
        if len(enqueued) == limit:
            break
        params, why = fit(trial.params, config, fixed=fixed)
        key = json.dumps(params, sort_keys=True)
        if why is None and not params:
            why = "none of its params is searched here"
        elif why is None and key in enqueued:
            why = f"the same params as its trial {enqueued[key]}, already enqueued"
        if why is not None:
            say(f"warm start: trial {trial.number} of {warm.name!r} skipped: {why}")
            continue
        study.enqueue_trial(
            params,
            user_attrs={TRIAL_ATTR: {"from": warm.name, "trial": trial.number}},
            skip_if_exists=True,
        )
        enqueued[key] = trial.number
    say(
        f"warm start: enqueued {len(enqueued)} of {len(candidates)} complete trial(s) of "
        f"{warm.name!r} (top_k {warm.top_k}, at most {limit})"
    )
    return len(enqueued)


def fit(
    params: Mapping[str, Any], config: SweepConfig, *, fixed: Mapping[str, Any]
) -> tuple[dict[str, Any], str | None]:
    """An earlier trial's params (as Optuna stored them) as this sweep's fixed params, or why
    they do not fit (a path this space does not search, at a value the config does not fix; a
    value outside its dimension). A method's own path (``train.lora.r``) counts only where
    that method is the trial's. ``fixed``: the config flattened, by dotted path."""
    space = config.search.space
    method = params.get("train.method", None if "train.method" in space else config.train.method)
    out: dict[str, Any] = {}
    for path, value in sorted(params.items()):
        owner = method_of_path(path)
        if owner is not None and method is not None and owner != method:
            continue  # never suggested here: a trial of another method
        if path not in space:
            if path in fixed and _same(_decoded(value), fixed[path]):
                continue
            return (
                {},
                f"{path} = {_show(value)} is not searched here (fixed at {_fixed(fixed, path)})",
            )
        stored, why = _in_dimension(value, space[path], integer=_is_int(path))
        if why is not None:
            return {}, f"{path} = {_show(value)} {why}"
        out[path] = stored
    return out, None


def _in_dimension(value: Any, dim: Dimension, *, integer: bool) -> tuple[Any, str | None]:
    """``value`` as Optuna stores it for ``dim`` (list choices as JSON text, as
    ``search.space`` suggests them), or why it is outside."""
    if dim.choices is not None:
        primitive = all(isinstance(c, _PRIMITIVES) for c in dim.choices)
        wanted = value if primitive else _decoded(value)
        for choice in dim.choices:
            if _same(wanted, choice):
                return (choice if primitive else json.dumps(choice)), None
        return None, f"is not among the choices {json.dumps(dim.choices)}"
    assert dim.low is not None and dim.high is not None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, f"is not a number (this space has {describe(dim)})"
    low, high = (int(dim.low), int(dim.high)) if integer else (dim.low, dim.high)
    if integer and not float(value).is_integer():
        return None, "is not an integer"
    if not (low - _slack(low) <= value <= high + _slack(high)):
        return None, f"is outside {describe(dim)}"
    step: float | None = int(dim.step or 1) if integer else dim.step
    if step is not None:
        steps = (value - low) / step
        if not math.isclose(steps, round(steps), abs_tol=1e-9):
            return None, f"is not on the grid of {describe(dim)} (from {low:g} by {step:g})"
    return (int(value) if integer else float(value)), None


def _slack(bound: float) -> float:
    # Floats that went through the database and back may differ in the last place.
    return abs(bound) * 1e-12


def _is_int(path: str) -> bool:
    return bool(leaf_annotation(SweepConfig, path) is int)


def _decoded(value: Any) -> Any:
    """A list-valued choice travels as JSON text (``search.space``); anything else as itself."""
    if isinstance(value, str):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        return decoded if isinstance(decoded, list | dict) else value
    return value


def _same(a: Any, b: Any) -> bool:
    # True == 1 in Python; a boolean choice is not a number.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def _show(value: Any) -> str:
    return json.dumps(_decoded(value))


def _fixed(fixed: Mapping[str, Any], path: str) -> str:
    return json.dumps(fixed[path]) if path in fixed else "its default"


# --- history ----------------------------------------------------------------------------------


def add_history(study: optuna.Study, warm: WarmStart, config: SweepConfig, *, say: Say) -> int:
    """Copy the earlier sweep's finished trials into ``study``, marked ``mode: history``.

    Complete trials always; pruned ones (with their evaluations: TPE ranks a pruned trial by
    its last one, below the complete ones, and the pruner compares new curves with them) only
    where the curves mean the same: the same ``train``, ``data``, pruner and pruning settings,
    so an evaluation at a resource is the same measurement. Otherwise complete trials come
    without their evaluations and rung records, so that neither the pruner nor ASHA's rungs
    compare curves measured differently. Trials copied by an interrupted earlier attempt are
    not copied twice. Returns how many were copied."""
    comparable = _same_curves(warm.source, config)
    states = (TrialState.COMPLETE, TrialState.PRUNED) if comparable else (TrialState.COMPLETE,)
    done = {
        int(t.user_attrs[TRIAL_ATTR]["trial"])
        for t in study.get_trials(deepcopy=False)
        if is_history(t) and t.user_attrs[TRIAL_ATTR].get("from") == warm.name
    }
    finished = own_trials(warm.old, states=states)
    copies = [_copy(t, warm.name, curves=comparable) for t in finished if t.number not in done]
    study.add_trials(copies)
    if comparable and config.search.multi_objective:
        _add_twins(study, warm, config, {t.number for t in finished if t.number not in done})
    pruned = sum(t.state == TrialState.PRUNED for t in finished)
    line = (
        f"warm start: {len(finished) - pruned} complete and {pruned} pruned trial(s) of "
        f"{warm.name!r} given to the sampler as history (not counted in this sweep's budget)"
    )
    if not comparable:
        line += "; its pruned trials and evaluations left out: its train/data/pruning differ"
    say(line)
    return len(copies)


def _add_twins(
    study: optuna.Study, warm: WarmStart, config: SweepConfig, numbers: Container[int]
) -> int:
    """A multi-objective sweep's evaluations live in its twins (``NAME#primary``, where its
    pruner decides): the copied trials' finished twins go to this sweep's primary study with
    their curves and rung records, so that its pruner compares new curves with them too. Each
    copy is marked like a history trial, ``trial`` naming the earlier sweep's trial."""
    try:
        old = optuna.load_study(study_name=warm.name + PRIMARY_SUFFIX, storage=warm.old._storage)
    except KeyError:
        return 0  # an earlier sweep recorded before twins existed
    new = optuna.load_study(study_name=config.name + PRIMARY_SUFFIX, storage=study._storage)
    twins = [
        t
        for t in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
        if t.user_attrs.get("trial") in numbers
    ]
    new.add_trials([_copy(t, warm.name, curves=True, of=int(t.user_attrs["trial"])) for t in twins])
    return len(twins)


def _same_curves(old: SweepConfig, new: SweepConfig) -> bool:
    def curve_settings(config: SweepConfig) -> Any:
        return config.model_dump(
            mode="json", include={"train": True, "data": True, "search": {"pruner", "pruning"}}
        )

    return bool(curve_settings(old) == curve_settings(new))


def _copy(trial: FrozenTrial, name: str, *, curves: bool, of: int | None = None) -> FrozenTrial:
    """The trial as a history trial of another study: its params, distributions, values and
    times; its user attrs (host, pid, tracking of runs in the earlier sweep) replaced by the
    mark (naming trial ``of``, where given: a twin names its trial); the sampler's system attrs
    (constraints, grid point) kept."""
    system: dict[str, Any] = {
        k: v for k, v in trial.system_attrs.items() if curves or not k.startswith(_RUNG_ATTR)
    }
    distributions: dict[str, BaseDistribution] = dict(trial.distributions)
    return FrozenTrial(
        number=-1,
        state=trial.state,
        value=None,
        values=trial.values,
        datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete,
        params=dict(trial.params),
        distributions=distributions,
        user_attrs={
            TRIAL_ATTR: {
                "from": name,
                "trial": trial.number if of is None else of,
                "mode": "history",
            }
        },
        system_attrs=system,
        intermediate_values=dict(trial.intermediate_values) if curves else {},
        trial_id=-1,
    )
