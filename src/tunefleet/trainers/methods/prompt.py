"""Prompt tuning through peft: trainable embeddings prepended to every input; the head trains.

The body, including the word embeddings, stays frozen; the soft prompt is initialised at
random (the text-initialised variant would need a tokenizer here and biases toward one task
wording).

On an encoder the head reads the first position, which is now the first virtual token (it
attends to the whole text). On a decoder the head reads the last real token; peft hands the
model embeddings rather than token ids, so the decoder is made to find that token from the
attention mask (``_head.read_last_real_token``), both when prepared and when loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch
from peft import PeftConfig, PeftModel, PromptTuningConfig, PromptTuningInit, TaskType
from torch import nn
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods._head import pooling, read_last_real_token, task_model
from tunefleet.trainers.methods._peft import VirtualTokenMethod
from tunefleet.trainers.methods.base import BaseFactory
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
            # peft would read these from the config's dict, where some are missing or wrong:
            # DistilBERT names them ``dim``/``n_layers``/``n_heads``, and ELECTRA's word
            # embeddings are narrower than its hidden size (projected up), while the prompt sits
            # beside the embedded words.
            token_dim=_embedding_width(model),
            num_attention_heads=_config_int(model, "num_attention_heads"),
            num_layers=_config_int(model, "num_hidden_layers"),
        )

    def finish(self, model: PeftModel, config: TrainConfig) -> None:
        _read_last_real_token(model)
        super().finish(model, config)

    def load(self, folder: Path, base: BaseFactory) -> nn.Module:
        model = super().load(folder, base)
        _read_last_real_token(model)
        return model


def _embedding_width(model: PreTrainedModel) -> int:
    weight = model.get_input_embeddings().weight
    assert isinstance(weight, torch.Tensor)
    return int(weight.shape[-1])


def _config_int(model: PreTrainedModel, name: str) -> int | None:
    # Config attributes map each architecture's own names (DistilBERT's ``n_heads``) to these.
    value = getattr(model.config, name, None)
    return value if isinstance(value, int) else None


def _read_last_real_token(model: nn.Module) -> None:
    inner = task_model(model)
    if pooling(inner) == "last":
        read_last_real_token(inner)
