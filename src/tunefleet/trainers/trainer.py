"""The Trainer of every trial: Hugging Face's Trainer, plus the held-out target domain scored
in each evaluation and gradient clipping with the norm measured once per step by module group.

Gradient clipping goes through Trainer's private ``_clip_grad_norm`` and ``_get_grad_norm``
hooks: a transformers release that renames them breaks here (tests/trainers/test_gradients.py).
The resumable state (trainers/resume.py) goes through the private ``_maybe_log_save_evaluate``
and ``_load_from_checkpoint``, and is written in the files and formats of Trainer's own
checkpoints, which its resume reads (tests/trainers/test_resume.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import DistributedType
from torch import Tensor, nn
from torch.nn.utils import clip_grads_with_norm_
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer
from transformers.trainer import OPTIMIZER_NAME, SCALER_NAME, SCHEDULER_NAME, TRAINER_STATE_NAME
from transformers.trainer_callback import ExportableState
from transformers.trainer_utils import EvalLoopOutput
from transformers.utils.import_utils import is_sagemaker_mp_enabled

from tunefleet.errors import CheckpointError
from tunefleet.trainers.evaluation import EvaluationRecorder
from tunefleet.trainers.gradients import GradientGroups
from tunefleet.trainers.resume import NonFiniteError, StateWriter, StopRequested

TARGET_PREFIX = "eval_target"
TARGET_METRICS = ("accuracy", "f1")
"""Scored on the held-out target-domain rows at every evaluation, as ``eval_target_<name>``."""
#: Where accelerate norms and clips gradients itself (sharded or engine-owned gradients).
_ENGINE_CLIPPED = frozenset(
    {
        DistributedType.DEEPSPEED,
        DistributedType.FSDP,
        DistributedType.XLA,
        DistributedType.MEGATRON_LM,
    }
)


MODEL_STATE = "model_state.pt"
"""The trained (and trainable) parameters and the buffers of a resumable state, by name."""
RNG_STATE = "rng_state.pth"
"""Trainer's name for a single process's RNG states."""


@dataclasses.dataclass(frozen=True)
class Resumable:
    """Where the trial keeps its resumable state, and when to stop early."""

    folder: Path | None
    """Replaced at every evaluation (and at a stop); None: no state is kept."""
    record: Callable[[], dict[str, Any]]
    """The callbacks' own state to keep beside Trainer's (the best-so-far), as JSON."""
    stop: threading.Event | None = None
    """Set from another thread: end after the current optimizer step, state written."""

    def stop_requested(self) -> bool:
        return self.stop is not None and self.stop.is_set()


class TunefleetTrainer(Trainer):
    """Trainer whose every evaluation also scores the held-out target-domain rows, whatever the
    method, so a source-only baseline and dann are compared on the same numbers.

    The target pass is folded into the one evaluation: a dict of eval datasets would make Trainer
    log and fire ``on_evaluate`` once per dataset (BestCheckpointCallback and the trackers would
    see source and target metrics in separate dicts), and a per-row domain flag passed as an extra
    label would be handed to every method's ``forward`` and mix target rows into ``eval_loss``.
    Here ``eval_loss`` stays the source task loss and ``eval_target_*`` join the same metrics.

    With ``gradient_groups``, the gradient norm of each optimizer step is measured once, before
    clipping, by :meth:`GradientGroups.measure` (global and per group, on the device), and that
    total is the one clipped with and logged as ``grad_norm``.

    A training loss or gradient norm that is NaN or infinite ends training at once with
    :class:`NonFiniteError`, before that step's update. With ``resumable``, the resumable state
    is written after every evaluation (after ReduceLROnPlateau stepped with it), and a stop
    request ends training after the current optimizer step with the state written: mid-epoch
    at once, at an epoch's last step after that epoch's evaluation, so a resumed trial never
    skips one.
    """

    def __init__(
        self,
        *args: Any,
        target_eval: Dataset[Any] | None = None,
        gradient_groups: GradientGroups | None = None,
        resumable: Resumable | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.target_eval = target_eval
        self.gradient_groups = gradient_groups
        self.resumable = resumable
        self.writer = StateWriter()
        """Writes resumable states off the training thread; run_trial waits for it."""
        self._plain_grads: bool | None = None

    def training_step(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor | Any],
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor:
        loss = super().training_step(model, inputs, num_items_in_batch)
        # One host sync, as Trainer's own NaN filter on the same loss already makes.
        if not bool(torch.isfinite(loss).all()):
            raise NonFiniteError(self.state.global_step + 1, "loss")
        return loss

    def _maybe_log_save_evaluate(self, *args: Any, **kwargs: Any) -> None:
        evaluating = self.control.should_evaluate
        super()._maybe_log_save_evaluate(*args, **kwargs)
        resumable = self.resumable
        if resumable is None:
            return
        finishing = (
            self.control.should_training_stop or self.state.global_step >= self.state.max_steps
        )
        # An epoch's last step, its evaluation still to come in the call after on_epoch_end
        # (only evaluations per epoch come then; step-based ones come with their step).
        before_evaluation = (
            self.args.eval_strategy == "epoch"
            and not evaluating
            and float(self.state.epoch or 0.0).is_integer()
        )
        stopping = resumable.stop_requested() and not finishing and not before_evaluation
        if resumable.folder is not None and (evaluating or stopping):
            self.save_resumable(resumable.folder, resumable.record())
        if stopping:
            self.writer.wait()  # on disk before the trial says it is interrupted
            raise StopRequested(self.state.global_step)

    def save_resumable(self, folder: Path, record: dict[str, Any]) -> None:
        """Replace ``folder`` with this moment's resumable state (see trainers/resume.py): copied
        here, written and swapped in on the writer's thread while training goes on."""
        fill = self._snapshot()
        step = {"step": self.state.global_step, "epoch": self.state.epoch}
        self.writer.submit(folder, fill=fill, record={**step, "callbacks": record})

    def _snapshot(self) -> Callable[[Path], None]:
        """This moment's state, copied to host memory, and how to write it: the files and
        formats Trainer's own checkpoints have, so Trainer's resume reads them. Single process
        (a trial's Trainer is): Trainer's sharded or engine-owned formats are not written."""
        model, optimizer, scheduler = self.model, self.optimizer, self.lr_scheduler
        assert model is not None and optimizer is not None  # set before training starts
        weights = copied(trained_state(model, optimizer))
        optimizer_state = copied(optimizer.state_dict())
        scheduler_state = copied(scheduler.state_dict()) if scheduler is not None else None
        scaler = getattr(self.accelerator, "scaler", None)
        scaler_state = copied(scaler.state_dict()) if scaler is not None else None
        rng: dict[str, Any] = {
            "python": random.getstate(),
            "numpy": np.random.get_state(),
            "cpu": torch.random.get_rng_state(),
        }
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.random.get_rng_state()
        self.store_flos()
        self._export_callback_states()
        trainer_state = json.dumps(dataclasses.asdict(self.state), indent=2, sort_keys=True)

        def fill(staging: Path) -> None:
            torch.save(weights, staging / MODEL_STATE)
            torch.save(optimizer_state, staging / OPTIMIZER_NAME)
            if scheduler_state is not None:
                torch.save(scheduler_state, staging / SCHEDULER_NAME)
            if scaler_state is not None:
                torch.save(scaler_state, staging / SCALER_NAME)
            torch.save(rng, staging / RNG_STATE)
            (staging / TRAINER_STATE_NAME).write_text(trainer_state + "\n", encoding="utf-8")

        return fill

    def _export_callback_states(self) -> None:
        """Trainer's exportable callbacks (TrainerControl among them) into its state, as its
        own checkpoints record them (replaced, not appended to, at each save)."""
        states: dict[str, list[Any]] = {}
        for callback in [*self.callback_handler.callbacks, self.control]:
            if isinstance(callback, ExportableState):
                states.setdefault(type(callback).__name__, []).append(callback.state())
        # The same field holds the callbacks before a save and their states after, as in Trainer.
        self.state.stateful_callbacks = {  # type: ignore[assignment]
            name: found[0] if len(found) == 1 else found for name, found in states.items()
        }

    def _load_from_checkpoint(
        self, resume_from_checkpoint: str, model: nn.Module | None = None
    ) -> None:
        path = Path(resume_from_checkpoint) / MODEL_STATE
        if not path.is_file():
            super()._load_from_checkpoint(resume_from_checkpoint, model)
            return
        module = model if model is not None else self.model
        assert module is not None  # Trainer loads into the model it trains
        state = torch.load(path, map_location="cpu", weights_only=True)
        # In place: the optimizer built before Trainer keeps the very parameters it holds.
        result = module.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise CheckpointError(
                f"resumable state {resume_from_checkpoint} holds weights this model lacks: "
                + ", ".join(result.unexpected_keys[:5])
            )

    def _clip_grad_norm(self, model: nn.Module) -> Any:
        groups = self._grouping()
        if groups is None:
            return super()._clip_grad_norm(model)  # type: ignore[no-untyped-call]
        total = self._measure(groups)
        # With the measured total: no second norm pass, and no host sync to decide the scale.
        clip_grads_with_norm_(groups.with_grad(), self.args.max_grad_norm, total)
        return total

    def _get_grad_norm(self, model: nn.Module, grad_norm: Tensor | float | None = None) -> Any:
        if grad_norm is None and (groups := self._grouping()) is not None:
            grad_norm = self._measure(groups)
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)  # type: ignore[no-untyped-call]
        # Called for every optimizer step, clipping or not, before the optimizer steps.
        if norm is not None and not math.isfinite(float(norm)):
            raise NonFiniteError(self.state.global_step + 1, "grad_norm")
        return norm

    def _measure(self, groups: GradientGroups) -> Tensor:
        # fp16's GradScaler: norms of the true gradients. accelerate's clip_grad_norm_, which
        # would unscale, is no longer called this step, so this is the step's one unscale_.
        self.accelerator.unscale_gradients()
        return groups.measure()

    def _grouping(self) -> GradientGroups | None:
        """The groups to measure with, or None where Trainer's own norm must be used."""
        groups = self.gradient_groups
        if (
            groups is None
            or self.accelerator.distributed_type in _ENGINE_CLIPPED
            or is_sagemaker_mp_enabled()
        ):
            return None
        if self._plain_grads is None:
            # DTensor gradients (tensor parallel) hold shards: their local norms are not the norm.
            self._plain_grads = all(type(p.grad) is Tensor for p in groups.with_grad())
        return groups if self._plain_grads else None

    def evaluation_loop(
        self,
        dataloader: DataLoader[Any],
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        # Only Trainer's own evaluations ("eval"): not predict(), not the target pass itself.
        if self.target_eval is None or metric_key_prefix != "eval":
            return output
        # The report kept with a checkpoint is the source evaluation's, whatever the target scores.
        with _report_paused(self.compute_metrics):
            target = super().evaluation_loop(
                self.get_eval_dataloader(self.target_eval),
                description,
                prediction_loss_only,
                ignore_keys,
                TARGET_PREFIX,
            )
        assert output.metrics is not None and target.metrics is not None  # always a dict here
        for name in TARGET_METRICS:
            key = f"{TARGET_PREFIX}_{name}"
            output.metrics[key] = target.metrics[key]
        return output


def _report_paused(compute: object) -> AbstractContextManager[None]:
    return compute.paused() if isinstance(compute, EvaluationRecorder) else nullcontext()


def trained_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Tensor]:
    """What training can change: the parameters the optimizer holds or that train, and the
    buffers. Frozen weights are rebuilt as they were from the base model and the seed."""
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return {
        name: value.detach()
        for name, value in model.state_dict(keep_vars=True).items()
        if not isinstance(value, nn.Parameter) or value.requires_grad or id(value) in held
    }


def copied(value: Any) -> Any:
    """``value`` with every tensor copied to host memory (a state dict holds the live ones)."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: copied(item) for key, item in value.items()}
    if isinstance(value, list):
        return [copied(item) for item in value]
    if isinstance(value, tuple):
        items = [copied(item) for item in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    return value
