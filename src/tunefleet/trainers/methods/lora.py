"""LoRA through peft: low-rank updates on the attention projections; the head trains fully.

A checkpoint holds only the adapter and the head (peft's ``modules_to_save``), a few MB, and is
restored onto the pretrained body.
"""

from __future__ import annotations

from pathlib import Path

from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from torch import nn
from transformers import PreTrainedModel, TrainerCallback

from tunefleet.config import TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.methods.base import BaseFactory
from tunefleet.trainers.methods.registry import register


@register("lora")
class Lora:
    name = "lora"

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        settings = config.lora
        peft_config = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=settings.r,
            lora_alpha=settings.alpha,
            lora_dropout=settings.dropout,
            target_modules=list(settings.target_modules) if settings.target_modules else None,
        )
        try:
            return get_peft_model(model, peft_config)
        except ValueError as exc:
            # peft knows no default targets for this architecture, or a name matched nothing.
            linear = sorted(
                {
                    name.rsplit(".", 1)[-1]
                    for name, module in model.named_modules()
                    if isinstance(module, nn.Linear)
                }
            )
            raise ConfigError(
                [
                    (
                        "train.lora.target_modules",
                        f"{settings.target_modules} adapted "
                        f"nothing ({exc}); linear modules of this model: {', '.join(linear)}",
                    )
                ]
            ) from None

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]

    def load(self, folder: Path, base: BaseFactory) -> nn.Module:
        return PeftModel.from_pretrained(base(), folder)

    def callbacks(self, config: TrainConfig) -> list[TrainerCallback]:
        return []
