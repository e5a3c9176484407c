"""Prompt tuning through peft: trainable embeddings prepended to every input; the head trains.

The body, including the word embeddings, stays frozen; the soft prompt is initialised at
random (the text-initialised variant would need a tokenizer here and biases toward one task
wording).
"""

from __future__ import annotations

from peft import PeftConfig, PromptTuningConfig, PromptTuningInit, TaskType
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods._peft import VirtualTokenMethod
from tunefleet.trainers.methods.registry import register


@register("prompt")
class PromptTuning(VirtualTokenMethod):
    tokens_key = "train.prompt.virtual_tokens"

    def virtual_tokens(self, config: TrainConfig) -> int:
        return config.prompt.virtual_tokens

    def peft_config(self, model: PreTrainedModel, config: TrainConfig) -> PeftConfig:
        return PromptTuningConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=config.prompt.virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
