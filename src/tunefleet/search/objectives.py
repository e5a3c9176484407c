"""A finished trial's objective values and constraint violations, from its best evaluation's
metrics and what tunefleet measured (``search.objectives``, ``search.constraints``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tunefleet.config import SweepConfig, parse_constraint


class MissingMetric(ValueError):
    """An objective or constraint names a metric the trial did not produce."""


@dataclass(frozen=True)
class Judged:
    """What the study is told about a complete trial."""

    values: list[float]
    """One per objective, in ``search.objectives`` order."""
    violations: dict[str, float]
    """Constraint rule -> Optuna's violation (<= 0: the rule holds)."""

    @property
    def feasible(self) -> bool | None:
        """None without constraints."""
        if not self.violations:
            return None
        return all(v <= 0 for v in self.violations.values())


def judge(
    config: SweepConfig, metrics: Mapping[str, float], measured: Mapping[str, float]
) -> Judged:
    """The trial's objective values and violations; MissingMetric names the first metric an
    objective or constraint needs that the trial lacks, and the ones it has."""
    figures = {**metrics, **measured}

    def figure(metric: str, where: str) -> float:
        if metric not in figures:
            raise MissingMetric(
                f"{where}: the trial has no {metric!r}; it has {', '.join(sorted(figures))}"
            )
        return float(figures[metric])

    values = [figure(o.metric, "search.objectives") for o in config.search.all_objectives]
    violations = {}
    for rule in config.search.constraints:
        constraint = parse_constraint(rule)
        violations[rule] = constraint.violation(figure(constraint.metric, "search.constraints"))
    return Judged(values, violations)
