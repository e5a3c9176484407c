"""LoRA through peft: low-rank updates on the attention projections; the head trains fully.

``use_rslora`` scales the update by alpha / sqrt(r) instead of alpha / r (same parameters);
``use_dora`` splits each adapted weight into magnitude and direction, adding one trainable
magnitude vector (out_features) per adapted module.

Left null, ``target_modules`` is the architecture's default from the table
(``tunefleet.trainers.architectures``: ``query``/``value``, GPT-2's ``c_attn``, Llama-style
``q_proj``/``v_proj``), else peft's own default for the model type.
"""

from __future__ import annotations

import re

from peft import LoraConfig, PeftConfig, TaskType
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.trainers.architectures import ARCHITECTURES
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
            target_modules=_targets(model, config),
            use_rslora=settings.use_rslora,
            use_dora=settings.use_dora,
        )

    def problem(
        self, exc: ValueError, model: PreTrainedModel, config: TrainConfig
    ) -> tuple[str, str]:
        return target_problem(TARGETS, _targets(model, config), model, exc)


def _targets(model: PreTrainedModel, config: TrainConfig) -> list[str] | None:
    if config.lora.target_modules:
        return list(config.lora.target_modules)
    row = ARCHITECTURES.get(str(model.config.model_type))
    return list(row.lora_targets) if row is not None else None
