"""Domain-adversarial training (DANN, Ganin et al. 2016, JMLR 17(59)).

The classifier is wrapped with a domain classifier (Linear -> ReLU -> Linear to 2 domains) that
reads the representation the task head reads, through a gradient-reversal layer: the domain
classifier learns to tell source rows from target rows while the encoder receives the reversed,
lambda-scaled gradient of that loss, so it learns features the domains share.

Which representation: the input of the task head's final linear layer (the last ``nn.Linear``
with ``num_labels`` outputs). For BERT-family models that is the pooler output, tanh(W h[CLS]),
as the head sees it (after its dropout); for RoBERTa/ELECTRA-style heads the vector entering
``out_proj``; for a decoder (GPT-2, Llama, Mistral, Qwen2) the hidden state of the last
non-pad token (the rightmost token that is not ``config.pad_token_id``, as transformers finds
it), the one its logits are read from. Capturing it with a forward pre-hook reuses the model's
own forward, so the task logits are exactly the plain classifier's.

Training rows are the labelled source rows and the target rows with IGNORE_INDEX as their label:
the task loss averages over source rows only, the domain loss over all rows. A checkpoint is the
plain classifier (``save_pretrained``) plus ``domain_classifier.safetensors``; ``load`` returns the
classifier alone, since predicting needs no domain head.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import Tensor, nn
from torch.nn import functional as F
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)
from transformers.utils.generic import ModelOutput

from tunefleet.config import DannConfig, TrainConfig
from tunefleet.trainers.methods._head import last_non_pad_token, task_head
from tunefleet.trainers.methods.base import BaseFactory, MethodBase
from tunefleet.trainers.methods.registry import register
from tunefleet.trainers.tokens import IGNORE_INDEX

DOMAIN_CLASSIFIER_FILE = "domain_classifier.safetensors"
OWN = re.compile(r"(?:^|\.)domain_classifier\.")


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by -lambda."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, lambda_: float) -> Tensor:
        ctx.lambda_ = lambda_
        # A view, not the input itself: autograd must see a new node to call our backward.
        return features.view_as(features)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.lambda_ * grad, None


def reverse_gradient(features: Tensor, lambda_: float) -> Tensor:
    """``features`` unchanged, but the gradient flowing back through it is scaled by -lambda."""
    result: Tensor = _ReverseGradient.apply(features, lambda_)  # type: ignore[no-untyped-call]
    return result


@dataclass
class DannOutput(ModelOutput):
    """What Trainer reads (``loss``, ``logits``) plus the domain side, present when the batch
    carried ``domain_labels`` (training); evaluation batches give ``loss`` and ``logits`` only,
    so Trainer's predictions stay the task logits."""

    loss: Tensor | None = None
    logits: Tensor | None = None
    domain_logits: Tensor | None = None
    domain_loss: Tensor | None = None


class DomainAdversarial(nn.Module):
    """A sequence classifier plus a domain classifier behind a gradient-reversal layer.

    ``forward`` takes the usual batch plus optional ``domain_labels`` (0 source, 1 target); rows
    labelled IGNORE_INDEX add nothing to the task loss. ``lambda_`` is set by
    :class:`LambdaSchedule` before every optimizer step.
    """

    def __init__(self, classifier: PreTrainedModel, *, hidden: int, lambda_: float) -> None:
        super().__init__()
        self.classifier = classifier
        head = task_head(classifier)
        # In the head's dtype and on its device, so a bfloat16 model takes it as it is.
        like: dict[str, Any] = {"dtype": head.weight.dtype, "device": head.weight.device}
        self.domain_classifier = nn.Sequential(
            nn.Linear(head.in_features, hidden, **like), nn.ReLU(), nn.Linear(hidden, 2, **like)
        )
        self.lambda_ = lambda_
        # In a tuple, not an attribute: a submodule attribute would register the head twice.
        self._head = (head,)

    def forward(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        labels: Tensor | None = None,
        domain_labels: Tensor | None = None,
    ) -> DannOutput:
        # Only what the batch has: DistilBERT's forward takes no token_type_ids.
        given = {"attention_mask": attention_mask, "token_type_ids": token_type_ids}
        inputs = {key: value for key, value in given.items() if value is not None}
        seen: list[Tensor] = []
        hook = self._head[0].register_forward_pre_hook(lambda _, args: seen.append(args[0]))
        try:
            logits: Tensor = self.classifier(input_ids=input_ids, **inputs).logits
        finally:
            hook.remove()
        loss = task_loss(logits, labels) if labels is not None else None
        if domain_labels is None:
            return DannOutput(loss=loss, logits=logits)
        features = self._pooled(seen, input_ids)
        domain_logits = self.domain_classifier(reverse_gradient(features, self.lambda_))
        domain_loss = F.cross_entropy(domain_logits, domain_labels)
        return DannOutput(
            loss=domain_loss if loss is None else loss + domain_loss,
            logits=logits,
            domain_logits=domain_logits,
            domain_loss=domain_loss,
        )

    def _pooled(self, seen: list[Tensor], input_ids: Tensor) -> Tensor:
        """One vector per row: the head's input, or for heads applied to every position (GPT-2)
        the position the model reads its logits from."""
        if len(seen) != 1:
            raise RuntimeError(f"the task head ran {len(seen)} times in one forward; expected 1")
        features = seen[0]
        if features.dim() == 2:
            return features
        last = last_non_pad_token(input_ids, self.classifier.config.pad_token_id)
        rows = torch.arange(len(features), device=features.device)
        return features[rows, last.to(features.device)]

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        # Trainer calls this on the module it trains when gradient checkpointing is on.
        self.classifier.activation_checkpointing_enable(**kwargs)


def task_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the labelled rows; 0 (not NaN) for a batch of target rows only."""
    labelled = (labels != IGNORE_INDEX).sum().clamp(min=1)
    total = F.cross_entropy(logits, labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / labelled


def lambda_at(settings: DannConfig, progress: float) -> float:
    """The reversal weight after ``progress`` (0..1) of training: constant, or Ganin's
    lambda * (2 / (1 + exp(-gamma p)) - 1), which rises from 0 so the domain classifier's early,
    noisy gradients do not disturb the encoder."""
    if settings.schedule == "constant":
        return settings.lambda_
    return settings.lambda_ * (2.0 / (1.0 + math.exp(-settings.gamma * progress)) - 1.0)


class LambdaSchedule(TrainerCallback):
    """Sets the wrapped model's ``lambda_`` before each optimizer step, p = global_step /
    max_steps."""

    def __init__(self, settings: DannConfig) -> None:
        self.settings = settings

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._apply(state, kwargs.get("model"))

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        self._apply(state, kwargs.get("model"))

    def _apply(self, state: TrainerState, model: Any) -> None:
        if not isinstance(model, DomainAdversarial):
            raise TypeError(f"dann's schedule needs its own model, got {type(model).__name__}")
        progress = state.global_step / state.max_steps if state.max_steps else 0.0
        model.lambda_ = lambda_at(self.settings, min(1.0, progress))


@register("dann")
class Dann(MethodBase):
    # The classifier is saved whole; the domain classifier beside it is not needed to predict.
    self_contained = True
    uses_target_rows = True

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        model.requires_grad_(True)
        return DomainAdversarial(
            model, hidden=config.dann.hidden, lambda_=lambda_at(config.dann, 0.0)
        )

    def save(self, model: nn.Module, folder: Path) -> None:
        if not isinstance(model, DomainAdversarial):
            raise TypeError(f"dann saves its own model, got {type(model).__name__}")
        model.classifier.save_pretrained(folder, safe_serialization=True)
        state = {
            key: value.detach().contiguous().cpu()
            for key, value in model.domain_classifier.state_dict().items()
        }
        save_file(state, str(folder / DOMAIN_CLASSIFIER_FILE))

    def load(self, folder: Path, base: BaseFactory) -> nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(folder)  # type: ignore[no-any-return]

    def callbacks(self, config: TrainConfig) -> list[TrainerCallback]:
        return [LambdaSchedule(config.dann)]

    def owns(self, parameter_name: str) -> bool:
        return OWN.search(parameter_name) is not None
