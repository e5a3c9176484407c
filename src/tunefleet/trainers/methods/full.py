"""Full fine-tuning: every parameter trains; a checkpoint is the whole model."""

from __future__ import annotations

from pathlib import Path

from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods.base import BaseFactory, MethodBase
from tunefleet.trainers.methods.registry import register


@register("full")
class FullFineTuning(MethodBase):
    self_contained = True

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        model.requires_grad_(True)
        return model

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]

    def load(self, folder: Path, base: BaseFactory) -> nn.Module:
        return AutoModelForSequenceClassification.from_pretrained(folder)  # type: ignore[no-any-return]
