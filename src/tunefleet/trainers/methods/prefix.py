"""Prefix tuning through peft: trainable keys and values prepended in every attention layer;
the head trains fully.

peft hands the prefix to the model as ``past_key_values`` (a transformers ``DynamicCache``) and
lengthens the attention mask by the prefix; for an encoder such as BERT, whose task model's
forward takes no cache, it calls the backbone itself and applies dropout and the classifier.
Models whose backbone takes no ``past_key_values`` (DistilBERT, for one) cannot be prefix-tuned.
"""

from __future__ import annotations

import torch
from peft import PeftConfig, PeftModel, PrefixTuningConfig, TaskType
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.methods._peft import VirtualTokenMethod, takes_past_key_values
from tunefleet.trainers.methods.registry import register


@register("prefix")
class PrefixTuning(VirtualTokenMethod):
    tokens_key = "train.prefix.virtual_tokens"

    def virtual_tokens(self, config: TrainConfig) -> int:
        return config.prefix.virtual_tokens

    def validate(self, model: PreTrainedModel, config: TrainConfig) -> None:
        # Both would only fail (or silently drop the prefix) at the first forward, mid-trial.
        if problems := _unsupported(model, config):
            raise ConfigError(problems)

    def peft_config(self, model: PreTrainedModel, config: TrainConfig) -> PeftConfig:
        settings = config.prefix
        return PrefixTuningConfig(
            task_type=TaskType.SEQ_CLS,
            num_virtual_tokens=settings.virtual_tokens,
            prefix_projection=settings.projection,
            # The projection MLP's hidden width (read only when projecting); peft has no
            # default for it.
            encoder_hidden_size=int(model.config.hidden_size),
        )

    def finish(self, model: PeftModel, config: TrainConfig) -> None:
        if config.prefix.projection:
            _project_once(model)
        super().finish(model, config)


def _project_once(model: PeftModel) -> None:
    """Run the prefix MLP on one row and broadcast it to the batch.

    peft saves a projected prefix as the MLP's output computed for a batch of one, but in
    training projects a copy per example; a matrix product over more rows rounds differently
    (1e-7), so a reloaded checkpoint would not give the trained model's logits exactly. Every row
    is the same prefix, so computing it once is also the cheaper equivalent.
    """
    encoder = model.prompt_encoder[model.active_adapter]
    project = encoder.forward

    def once(prefix: torch.Tensor) -> torch.Tensor:
        projected: torch.Tensor = project(prefix[:1])
        return projected.expand(prefix.shape[0], -1, -1)

    encoder.forward = once


def _unsupported(model: PreTrainedModel, config: TrainConfig) -> list[tuple[str, str]]:
    problems = []
    if not takes_past_key_values(model):
        problems.append(
            (
                "train.method",
                f"prefix needs a model that accepts past_key_values; "
                f"{type(model).__name__} does not",
            )
        )
    if config.gradient_checkpointing:
        problems.append(
            (
                "train.gradient_checkpointing",
                "cannot be combined with prefix: transformers drops past_key_values, which "
                "carry the prefix, from checkpointed layers in training",
            )
        )
    return problems
