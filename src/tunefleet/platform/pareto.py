"""The Pareto front of a multi-objective sweep, where people look at it: ``status``, ``compare``,
the HTML report and ``promote``.

Only feasible COMPLETE trials take part (a trial is feasible when every constraint Optuna holds
for it is ``<= 0``, its convention); pruned, failed and running trials have no values, and an
infeasible trial is never on the front. Rank 0 is the front; rank ``k`` is the front of what is
left once ranks ``0..k-1`` are removed (non-dominated sorting). Equal values dominate neither
way, so ties share a rank, as in ``optuna.Study.best_trials``. No torch, no Optuna study needed:
plain FrozenTrials in, trial numbers out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from optuna.trial import FrozenTrial, TrialState

from tunefleet.config import Objective

__all__ = ["Front", "dominates", "feasible", "front_of", "preferred"]


def feasible(trial: FrozenTrial) -> bool:
    """Whether every constraint set on the trial holds (a trial without any is feasible)."""
    return all(violation <= 0.0 for violation in trial.constraints.values())


def _losses(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    # Minimisation throughout: a maximised objective is negated once, here.
    return tuple(-v if d == "maximize" else v for v, d in zip(values, directions, strict=True))


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Whether values ``a`` dominate ``b``: no worse in every objective, better in one."""
    la, lb = _losses(a, directions), _losses(b, directions)
    return all(x <= y for x, y in zip(la, lb, strict=True)) and la != lb


@dataclass(frozen=True)
class Front:
    """The objectives, the values of every complete trial and the feasible ones' front ranks."""

    objectives: tuple[Objective, ...]
    values: dict[int, tuple[float, ...]]
    """Trial number -> values in objectives order, for complete trials (infeasible ones too)."""
    ranks: dict[int, int]
    """Trial number -> front rank (0 = on the front), for feasible complete trials."""
    infeasible: frozenset[int]
    """Complete trials that broke a constraint: never ranked."""

    @property
    def members(self) -> list[int]:
        """The front's trial numbers, best in the first objective first."""
        return sorted((n for n, r in self.ranks.items() if r == 0), key=self.order_key)

    def on_front(self, number: int) -> bool:
        return self.ranks.get(number) == 0

    def order_key(self, number: int) -> tuple[int, float, int]:
        """Sorts ranked trials by rank, then by the first objective (best first), then number."""
        first = _losses(self.values[number], [o.direction for o in self.objectives])[0]
        return (self.ranks[number], first, number)


def front_of(trials: Sequence[FrozenTrial], objectives: Sequence[Objective]) -> Front:
    """The front ranks of ``trials`` under ``objectives`` (the study's objectives, in order)."""
    directions = [o.direction for o in objectives]
    values: dict[int, tuple[float, ...]] = {}
    infeasible: set[int] = set()
    for trial in trials:
        if trial.state != TrialState.COMPLETE or trial.values is None:
            continue
        if len(trial.values) != len(directions):
            raise ValueError(
                f"trial {trial.number} has {len(trial.values)} values for "
                f"{len(directions)} objectives ({', '.join(o.metric for o in objectives)})"
            )
        values[trial.number] = tuple(float(v) for v in trial.values)
        if not feasible(trial):
            infeasible.add(trial.number)
    ranked = {n: v for n, v in values.items() if n not in infeasible}
    return Front(tuple(objectives), values, _ranks(ranked, directions), frozenset(infeasible))


def _ranks(values: dict[int, tuple[float, ...]], directions: Sequence[str]) -> dict[int, int]:
    """Deb's fast non-dominated sort: O(objectives x trials^2), fine for a sweep's trials."""
    numbers = sorted(values)
    beaten_by = {n: 0 for n in numbers}
    beats: dict[int, list[int]] = {n: [] for n in numbers}
    for i, a in enumerate(numbers):
        for b in numbers[i + 1 :]:
            if dominates(values[a], values[b], directions):
                beats[a].append(b)
                beaten_by[b] += 1
            elif dominates(values[b], values[a], directions):
                beats[b].append(a)
                beaten_by[a] += 1
    ranks: dict[int, int] = {}
    layer = [n for n in numbers if beaten_by[n] == 0]
    rank = 0
    while layer:
        following = []
        for n in layer:
            ranks[n] = rank
            for m in beats[n]:
                beaten_by[m] -= 1
                if beaten_by[m] == 0:
                    following.append(m)
        layer, rank = following, rank + 1
    return ranks


def metric_index(objectives: Sequence[Objective], metric: str) -> int:
    """The position of ``metric`` among the objectives; ValueError naming the allowed ones."""
    names = [o.metric for o in objectives]
    if metric not in names:
        raise ValueError(f"{metric!r} is not an objective of this sweep; one of {', '.join(names)}")
    return names.index(metric)


def preferred(front: Front, metric: str) -> int:
    """The front member best in ``metric``; ties go to the better first objective, then to the
    lower trial number. ValueError when ``metric`` is no objective or the front is empty."""
    index = metric_index(front.objectives, metric)
    members = front.members
    if not members:
        raise ValueError("the sweep has no feasible complete trial: its front is empty")
    directions = [o.direction for o in front.objectives]

    def key(number: int) -> tuple[float, float, int]:
        losses = _losses(front.values[number], directions)
        return (losses[index], losses[0], number)

    return min(members, key=key)
