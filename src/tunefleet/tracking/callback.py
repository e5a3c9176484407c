"""The Trainer callback that turns logging steps and evaluations into points."""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tunefleet.tracking.bus import TelemetryBus
from tunefleet.tracking.events import Point

STEP_KEYS = ("loss", "learning_rate", "grad_norm", "epoch")
SKIPPED_EVAL_KEYS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


class TrackingCallback(TrainerCallback):
    """Hands each logged value to the bus and returns at once (the bus thread does the I/O)."""

    def __init__(self, bus: TelemetryBus) -> None:
        self.bus = bus

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not logs:
            return
        step = state.global_step
        points = [
            Point.now(key, value, step)
            for key, value in logs.items()
            if isinstance(value, int | float)
            and not isinstance(value, bool)
            and (key in STEP_KEYS or (key.startswith("eval_") and key not in SKIPPED_EVAL_KEYS))
        ]
        if any(p.key != "epoch" for p in points):
            self.bus.emit(points)
