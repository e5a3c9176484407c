"""LoRA through peft: low-rank updates on the attention projections; the head trains fully.

``use_rslora`` scales the update by alpha / sqrt(r) instead of alpha / r (same parameters);
``use_dora`` splits each adapted weight into magnitude and direction, adding one trainable
magnitude vector (out_features) per adapted module.
"""

from __future__ import annotations

import re

from peft import LoraConfig, PeftConfig, TaskType
from torch import nn
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods._peft import PeftMethod, attach, target_problem
from tunefleet.trainers.methods.registry import register

# lora_A/lora_B, lora_embedding_A/B (a ParameterDict: the name ends there) and DoRA's
# lora_magnitude_vector.
OWN = re.compile(r"(?:^|\.)lora_\w+(?:\.|$)")


@register("lora")
class Lora(PeftMethod):
    name = "lora"

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        settings = config.lora
        targets = list(settings.target_modules) if settings.target_modules else None

        def make_config() -> PeftConfig:
            return LoraConfig(
                task_type=TaskType.SEQ_CLS,
                r=settings.r,
                lora_alpha=settings.alpha,
                lora_dropout=settings.dropout,
                target_modules=targets,
                use_rslora=settings.use_rslora,
                use_dora=settings.use_dora,
            )

        return attach(
            model, make_config, target_problem("train.lora.target_modules", targets, model)
        )

    def owns(self, parameter_name: str) -> bool:
        return OWN.search(parameter_name) is not None
