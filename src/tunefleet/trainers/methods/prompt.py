"""Prompt tuning through peft: trainable embeddings prepended to every input; the head trains.

The body, including the word embeddings, stays frozen; the soft prompt is initialised at
random (the text-initialised variant would need a tokenizer here and biases toward one task
wording).
"""

from __future__ import annotations

from peft import PeftConfig, PromptTuningConfig, PromptTuningInit, TaskType
from torch import nn
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods._peft import (
    PROMPT_ENCODER,
    PeftMethod,
    attach,
    fixed_problem,
    guard_positions,
)
from tunefleet.trainers.methods.registry import register

KEY = "train.prompt.virtual_tokens"


@register("prompt")
class PromptTuning(PeftMethod):
    name = "prompt"

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        tokens = config.prompt.virtual_tokens

        def make_config() -> PeftConfig:
            return PromptTuningConfig(
                task_type=TaskType.SEQ_CLS,
                num_virtual_tokens=tokens,
                prompt_tuning_init=PromptTuningInit.RANDOM,
            )

        wrapped = attach(model, make_config, fixed_problem(KEY))
        guard_positions(wrapped, tokens, KEY)
        return wrapped

    def owns(self, parameter_name: str) -> bool:
        return PROMPT_ENCODER.search(parameter_name) is not None
