"""What a sequence-classification head reads, for the methods that must read the same thing or
make the model read it: its final linear layer, and, on a decoder, the last real token.

An encoder's head reads the first token (``[CLS]``, through a pooler or not). A decoder's head
(``GPT2ForSequenceClassification``, transformers' ``GenericForSequenceClassification`` behind
Llama, Mistral, Qwen2 and their kin) scores every position and keeps one per row: the
rightmost token that is not ``config.pad_token_id``, found from ``input_ids``. Given
``inputs_embeds`` instead, it cannot tell padding apart and keeps the last position, a padding
position in every right-padded row; prompt tuning feeds the model exactly that (peft prepends
the soft prompt to the embedded inputs), so :func:`read_last_real_token` puts the last real
token's state where the head looks.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel
from transformers.modeling_layers import GenericForSequenceClassification

from tunefleet.errors import ConfigError
from tunefleet.trainers.architectures import ARCHITECTURES, Pooling


def task_model(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside wrappers (peft's, dann's): the first module that is one."""
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            return module
    raise TypeError(f"{type(model).__name__} holds no transformers model")


def pooling(model: PreTrainedModel) -> Pooling:
    """Which token the head reads: the table's answer, else ``last`` for transformers' generic
    decoder head."""
    row = ARCHITECTURES.get(str(getattr(model.config, "model_type", "")))
    if row is not None:
        return row.pooling
    return "last" if isinstance(model, GenericForSequenceClassification) else "first"


def task_head(model: PreTrainedModel) -> nn.Linear:
    """The classifier's final linear layer: the last ``nn.Linear`` giving ``num_labels`` outputs
    (heads are registered after the body in every sequence-classification model)."""
    heads = [
        module
        for module in model.modules()
        if isinstance(module, nn.Linear) and module.out_features == model.config.num_labels
    ]
    if not heads:
        raise ConfigError(
            [
                (
                    "train.method",
                    f"found no linear task head with {model.config.num_labels} outputs "
                    f"in {type(model).__name__}",
                )
            ]
        )
    return heads[-1]


def last_non_pad_token(input_ids: Tensor, pad_token_id: int | None) -> Tensor:
    """Per row, the position a decoder's head reads, as transformers finds it: the rightmost
    token that is not padding, or the last position when the model has no padding token."""
    if pad_token_id is None:
        return torch.full((len(input_ids),), input_ids.shape[-1] - 1, device=input_ids.device)
    return _rightmost(input_ids != pad_token_id)


def _rightmost(real: Tensor) -> Tensor:
    positions = torch.arange(real.shape[-1], device=real.device)
    return (positions * real.int()).argmax(-1)


def read_last_real_token(model: PreTrainedModel) -> None:
    """Make a decoder's head read each row's last real token when it is given ``inputs_embeds``.

    The backbone's last hidden state at the final position is replaced by the state at the
    row's last position whose attention mask is 1, which is where the head then reads. Nothing
    else reads the padding positions' states, and causal attention means the real tokens' states
    never depended on them, so a row's logits are the same alone and in any batch. With
    ``input_ids`` (the head finds the position itself) or without a mask, nothing changes.
    """
    backbone = model.base_model

    def move(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        input_ids = args[0] if args else kwargs.get("input_ids")
        mask = kwargs.get("attention_mask")
        if input_ids is not None or not isinstance(mask, Tensor):
            return out
        states: Tensor = out.last_hidden_state
        rows = torch.arange(states.shape[0], device=states.device)  # traceable (ONNX export)
        moved = states.clone()
        moved[:, -1] = states[rows, _rightmost(mask != 0).to(states.device)]
        out.last_hidden_state = moved
        return out

    backbone.register_forward_hook(move, with_kwargs=True)
