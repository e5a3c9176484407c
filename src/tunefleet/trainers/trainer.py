"""The Trainer of every trial: Hugging Face's Trainer, plus the held-out target domain scored
in each evaluation and gradient clipping with the norm measured once per step by module group.

Gradient clipping goes through Trainer's private ``_clip_grad_norm`` and ``_get_grad_norm``
hooks: a transformers release that renames them breaks here (tests/trainers/test_gradients.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

from accelerate.utils import DistributedType
from torch import Tensor, nn
from torch.nn.utils import clip_grads_with_norm_
from torch.utils.data import DataLoader, Dataset
from transformers import Trainer
from transformers.trainer_utils import EvalLoopOutput
from transformers.utils.import_utils import is_sagemaker_mp_enabled

from tunefleet.trainers.evaluation import EvaluationRecorder
from tunefleet.trainers.gradients import GradientGroups

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
    """

    def __init__(
        self,
        *args: Any,
        target_eval: Dataset[Any] | None = None,
        gradient_groups: GradientGroups | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.target_eval = target_eval
        self.gradient_groups = gradient_groups
        self._plain_grads: bool | None = None

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
        return super()._get_grad_norm(model, grad_norm=grad_norm)  # type: ignore[no-untyped-call]

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
