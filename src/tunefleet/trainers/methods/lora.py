"""LoRA through peft: low-rank updates on the attention projections; the head trains fully.

``use_rslora`` scales the update by alpha / sqrt(r) instead of alpha / r (same parameters);
``use_dora`` splits each adapted weight into magnitude and direction, adding one trainable
magnitude vector (out_features) per adapted module.
"""

from __future__ import annotations

import re

from peft import LoraConfig, PeftConfig, TaskType
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods._peft import PeftMethod, target_problem
from tunefleet.trainers.methods.registry import register

TARGETS = "train.lora.target_modules"


@register("lora")
class Lora(PeftMethod):
    # lora_A/lora_B, lora_embedding_A/B (a ParameterDict: the name ends there) and DoRA's
    # lora_magnitude_vector.
    own_pattern = re.compile(r"(?:^|\.)lora_\w+(?:\.|$)")

    def peft_config(self, model: PreTrainedModel, config: TrainConfig) -> PeftConfig:
        settings = config.lora
        return LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=_targets(config),
            use_rslora=settings.use_rslora,
            use_dora=settings.use_dora,
        )

    def problem(
        self, exc: ValueError, model: PreTrainedModel, config: TrainConfig
    ) -> tuple[str, str]:
        return target_problem(TARGETS, _targets(config), model, exc)


def _targets(config: TrainConfig) -> list[str] | None:
    targets = config.lora.target_modules
    return list(targets) if targets else None
