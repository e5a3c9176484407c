"""The Trainer callback that turns logging steps, evaluations and checkpoints into events."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from tunefleet.tracking.bus import TelemetryBus
from tunefleet.tracking.events import Checkpoint, Evaluation, Event, Point, Progress

STEP_KEYS = ("loss", "learning_rate", "grad_norm", "epoch")
GROUP_PREFIX = "grad_norm/"
SKIPPED_EVAL_KEYS = ("eval_runtime", "eval_samples_per_second", "eval_steps_per_second")


def _tracked(key: str, value: object) -> bool:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    return (
        key in STEP_KEYS
        or key.startswith(GROUP_PREFIX)
        or (key.startswith("eval_") and key not in SKIPPED_EVAL_KEYS)
    )


class TrackingCallback(TrainerCallback):
    """Hands each log to the bus and returns: the spool append is a buffered write, the
    delivery happens on the bus thread. Flushes the spool at every evaluation and at the end.

    ``report_file`` names the evaluation report a best checkpoint folder carries: the checkpoint
    format is the trainers' (``trainers.checkpoint.EVALUATION``), which tracking does not import,
    so whoever builds the callback hands the name over. ``seconds`` keeps the time each
    ``on_log`` took on the training thread (the benchmark's per-step latency); ``step`` is the
    latest global step, for the system monitor.
    """

    def __init__(self, bus: TelemetryBus, *, report_file: str) -> None:
        if not report_file or "/" in report_file:
            raise ValueError(f"report_file must be a file name, got {report_file!r}")
        self.bus, self.report_file = bus, report_file
        self.step = 0
        self.seconds: list[float] = []

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        # After a resume, global_step is the resumed one already: progress counts from there.
        self.step = state.global_step
        self.bus.emit([Progress(state.global_step, state.max_steps)])

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.step = state.global_step

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        started = time.perf_counter()
        step = self.step = state.global_step
        logs = logs or {}
        points = [Point.now(k, v, step) for k, v in logs.items() if _tracked(k, v)]
        if "loss" not in logs:
            # An evaluation's log repeats the epoch of the training log at the same step, and a
            # tracker keeping one value per key and step (W&B) would hold it once, MLflow twice.
            points = [p for p in points if p.key != "epoch"]
        if any(p.key != "epoch" for p in points):
            self.bus.emit(points)
        self.seconds.append(time.perf_counter() - started)

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        # BestCheckpointCallback runs first and marks a new best in Trainer's own state fields.
        if state.best_global_step == state.global_step and state.best_model_checkpoint:
            self.bus.emit(self._best_events(state))
        self.bus.flush()

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.bus.flush()

    def _best_events(self, state: TrainerState) -> list[Event]:
        folder = Path(str(state.best_model_checkpoint))
        value = float(state.best_metric) if state.best_metric is not None else math.nan
        events: list[Event] = [Checkpoint(state.global_step, value, str(folder))]
        report = folder / self.report_file
        if report.is_file():
            events.append(Evaluation(state.global_step, json.loads(report.read_text())))
        return events
