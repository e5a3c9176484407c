"""The promotion gate: pure checks of a challenger's test-set scores against the thresholds of
``promotion:`` and the champion's scores on the same test set.

No I/O and no model: :func:`run_gate` takes two :class:`~tunefleet.platform.scoring.Scores`
(or one, while there is no champion) and says, check by check, the figure, the limit and
whether it held, so a failed gate can say which check failed and by how much.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunefleet.config.schema import PromotionConfig
from tunefleet.platform.scoring import Scores


@dataclass(frozen=True)
class Check:
    """One check of the gate: ``figure`` compared with ``limit``.

    ``kind`` is ``min`` (the figure must be at least the limit) or ``max`` (at most).
    ``margin`` is how far the figure is on the right side of the limit: negative when the check
    failed, by that much.
    """

    name: str
    figure: float
    limit: float
    kind: str
    passed: bool
    detail: str = ""

    @property
    def margin(self) -> float:
        return self.figure - self.limit if self.kind == "min" else self.limit - self.figure

    def describe(self) -> str:
        relation = ">=" if self.kind == "min" else "<="
        verdict = "pass" if self.passed else f"FAIL by {abs(self.margin):.4g}"
        extra = f" ({self.detail})" if self.detail else ""
        return f"{self.name}: {self.figure:.4g} {relation} {self.limit:.4g}: {verdict}{extra}"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "figure": self.figure,
            "limit": self.limit,
            "kind": self.kind,
            "passed": self.passed,
            "margin": self.margin,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class GateResult:
    """Every configured check that applied, and the scores they came from."""

    metric: str
    challenger: Scores
    champion: Scores | None
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)

    def to_json(self) -> dict[str, Any]:
        """What the alias history keeps (strict JSON: every figure is finite)."""
        return {
            "passed": self.passed,
            "metric": self.metric,
            "checks": [c.to_json() for c in self.checks],
            "challenger": self.challenger.to_json(),
            "champion": None if self.champion is None else self.champion.to_json(),
        }


def run_gate(config: PromotionConfig, *, challenger: Scores, champion: Scores | None) -> GateResult:
    """The checks of ``config`` that apply: the absolute ones (floor, latency, size) always,
    the relative ones (gain, recall drop) only against a champion."""
    checks: list[Check] = []
    value = challenger.metric(config.metric)
    if config.min_value is not None:
        checks.append(_at_least(f"{config.metric} floor", value, config.min_value))
    if champion is not None:
        if config.min_gain is not None:
            gain = value - champion.metric(config.metric)
            checks.append(_at_least(f"{config.metric} gain over champion", gain, config.min_gain))
        if config.max_recall_drop is not None:
            checks.append(_recall_drop(challenger, champion, config.max_recall_drop))
    if config.max_p95_latency_ms is not None:
        checks.append(
            _at_most("p95 latency ms", challenger.p95_latency_ms, config.max_p95_latency_ms)
        )
    if config.max_model_mb is not None:
        checks.append(_at_most("model MB", challenger.model_mb, config.max_model_mb))
    return GateResult(config.metric, challenger, champion, tuple(checks))


def _at_least(name: str, figure: float, limit: float, detail: str = "") -> Check:
    return Check(name, figure, limit, "min", figure >= limit, detail)


def _at_most(name: str, figure: float, limit: float, detail: str = "") -> Check:
    return Check(name, figure, limit, "max", figure <= limit, detail)


def _recall_drop(challenger: Scores, champion: Scores, limit: float) -> Check:
    """The largest fall in one class's recall; a class the challenger cannot predict at all
    (absent from its labels) has recall 0."""
    drops = {
        label: recall - challenger.recall.get(label, 0.0)
        for label, recall in champion.recall.items()
    }
    label = max(sorted(drops), key=lambda k: drops[k])
    was, now = champion.recall[label], challenger.recall.get(label, 0.0)
    detail = f"class {label!r}: recall {was:.4g} -> {now:.4g}"
    return _at_most("recall drop", max(drops[label], 0.0), limit, detail)


def describe_gate(result: GateResult) -> str:
    """The gate's verdict and each check's line, for the terminal."""
    verdict = "passed" if result.passed else "FAILED"
    lines = [f"gate {verdict} ({len(result.checks)} check(s))"]
    challenger, champion = result.challenger, result.champion
    lines.append(f"  challenger: {challenger.summary()}")
    if champion is not None:
        lines.append(f"  champion:   {champion.summary()}")
    else:
        lines.append("  no champion yet: only the absolute checks apply")
    lines.extend(f"  {check.describe()}" for check in result.checks)
    return "\n".join(lines)
