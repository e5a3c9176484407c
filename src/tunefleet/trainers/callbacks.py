"""The Trainer callback every trial has: keep the best evaluation's checkpoint, report each
evaluation for pruning, stop early when the objective stops improving."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

Reporter = Callable[[int, float], bool]
"""Called with (resource, objective value) after each evaluation, the resource being the global
optimizer step times ``resource_per_step`` (1, or the examples an optimizer step trains on);
True asks to stop (prune), which is granted at every evaluation but the trial's final one."""


@dataclass
class _Best:
    value: float | None = None
    epoch: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    hashes: dict[str, str] | None = None


class BestCheckpointCallback(TrainerCallback):
    """Keeps the best evaluation's checkpoint and reports every evaluation for pruning, at its
    resource (the global step, or the examples trained on so far), so evaluations inside an
    epoch (``train.eval_every``) are each a point of the pruner's curve.

    A trial at its final evaluation (the last step of training, or early stopping ending it
    here) is complete: it is not pruned, whatever ``report`` answers, and keeps its checkpoint.

    A new best is also recorded in Trainer's own ``state.best_metric``, ``best_global_step`` and
    ``best_model_checkpoint`` (``folder``), so callbacks after this one in the same
    ``on_evaluate`` can tell that this evaluation is the new best and find its checkpoint.
    """

    def __init__(
        self,
        *,
        metric: str,
        maximize: bool,
        write: Callable[[nn.Module, float, float], dict[str, str]],
        report: Reporter | None,
        patience: int | None = None,
        folder: Path | None = None,
        resource_per_step: int = 1,
    ) -> None:
        self.metric, self.maximize, self.write, self.report = metric, maximize, write, report
        self.patience = patience
        self.resource_per_step = resource_per_step
        self.folder = folder
        self.best = _Best()
        self.pruned = False
        self.stale = 0
        """Evaluations since the objective last improved (for early stopping)."""

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics or self.metric not in metrics:
            raise KeyError(
                f"search.metric {self.metric!r} is not among the eval metrics: "
                f"{', '.join(sorted(metrics or {}))}"
            )
        value, epoch = float(metrics[self.metric]), float(state.epoch or 0)
        if self._better(value):
            self.best = _Best(
                value,
                epoch,
                {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
            )
            self.best.hashes = self.write(kwargs["model"], value, epoch)
            self._record_best(state, value)
            self.stale = 0
        else:
            self.stale += 1
            if self.patience is not None and self.stale >= self.patience:
                control.should_training_stop = True
        final = _final_evaluation(state, control)
        # Every evaluation is reported (the pruner compares later trials with it), but the final
        # one is never pruned: its compute is spent, and pruning would only discard its result.
        resource = state.global_step * self.resource_per_step
        if self.report is not None and self.report(resource, value) and not final:
            self.pruned = True
            control.should_training_stop = True

    def export(self) -> dict[str, Any]:
        """The best-so-far and the early-stopping count, as JSON, for a trial's resumable state
        (the best checkpoint itself is its own folder, matched by ``hashes``)."""
        folder = str(self.folder) if self.folder is not None else None
        return {
            "best": asdict(self.best),
            "stale": self.stale,
            "pruned": self.pruned,
            "folder": folder,
        }

    def restore(self, exported: dict[str, Any]) -> None:
        """Continue from what :meth:`export` gave (a resumed trial)."""
        self.best = _Best(**exported["best"])
        self.stale, self.pruned = int(exported["stale"]), bool(exported["pruned"])

    def _record_best(self, state: TrainerState, value: float) -> None:
        state.best_metric = value
        state.best_global_step = state.global_step
        if self.folder is not None:
            state.best_model_checkpoint = str(self.folder)

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best.value is None:
            return True
        return value > self.best.value if self.maximize else value < self.best.value


def _final_evaluation(state: TrainerState, control: TrainerControl) -> bool:
    """Whether training ends after this evaluation: its last step is done (Trainer's own flow
    also flags that with ``should_training_stop``), or a callback has already stopped it."""
    return control.should_training_stop or (0 < state.max_steps <= state.global_step)
