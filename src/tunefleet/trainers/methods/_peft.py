"""What the peft-based methods share: wrapping a model with peft's errors turned into config
errors, and the adapter-only checkpoint.

A peft checkpoint holds only the adapter and the head (peft's ``modules_to_save``, which for
sequence classification is the ``classifier``/``score`` module, not the pooler), a few MB, and is
restored onto the pretrained body that ``base()`` builds.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from tunefleet.errors import ConfigError
from tunefleet.trainers.methods.base import BaseFactory, MethodBase

Problem = Callable[[ValueError], tuple[str, str]]
"""Turns peft's ValueError into the (config key, explanation) a user can act on."""

#: The soft prompt / prefix (and its projection MLP) that prompt and prefix tuning train.
PROMPT_ENCODER = re.compile(r"(?:^|\.)prompt_encoder\.")


class PeftMethod(MethodBase):
    """Save and load for every method whose ``prepare`` returns a :class:`PeftModel`."""

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]

    def load(self, folder: Path, base: BaseFactory) -> nn.Module:
        return PeftModel.from_pretrained(base(), folder)


def attach(
    model: PreTrainedModel, make_config: Callable[[], PeftConfig], problem: Problem
) -> PeftModel:
    """``get_peft_model`` on ``make_config()``; peft validates both while building the config and
    while matching it against the model, so both happen under the same error mapping."""
    try:
        wrapped = get_peft_model(model, make_config())
    except ValueError as exc:
        raise ConfigError([problem(exc)]) from None
    assert isinstance(wrapped, PeftModel)  # mixed=False, the default, always gives a PeftModel
    return wrapped


def target_problem(key: str, value: Sequence[str] | None, model: nn.Module) -> Problem:
    """For module-targeting methods: name the bad key and list what could have been targeted."""

    def describe(exc: ValueError) -> tuple[str, str]:
        asked = "peft's default targets" if value is None else list(value)
        return (
            key,
            f"{asked} adapted nothing ({exc}); "
            f"linear modules of this model: {', '.join(linear_module_names(model))}",
        )

    return describe


def fixed_problem(key: str) -> Problem:
    return lambda exc: (key, f"peft refused it: {exc}")


def linear_module_names(model: nn.Module) -> list[str]:
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear)
        }
    )


def takes_past_key_values(model: PreTrainedModel) -> bool:
    """Whether prefix tuning can inject its keys/values: peft passes ``past_key_values`` to the
    model, or, when the task model's forward lacks it (BERT), to its backbone child."""
    candidates = [model, *(c for c in model.children() if isinstance(c, PreTrainedModel))]
    return any("past_key_values" in inspect.signature(m.forward).parameters for m in candidates)


def guard_positions(model: PeftModel, virtual_tokens: int, key: str) -> None:
    """Fail with the keys to change when virtual tokens push inputs past the position table.

    Both prompt and prefix tuning shift the real tokens' absolute positions by ``virtual_tokens``
    (prompt: the prompt occupies the first positions; prefix: the model counts the prefix as
    past tokens), so ``data.max_length + virtual_tokens`` must fit ``max_position_embeddings``;
    otherwise the embedding lookup fails with a bare IndexError deep in the model.
    """
    limit = getattr(model.config, "max_position_embeddings", None)
    if not isinstance(limit, int):
        return  # relative/rotary positions: no table to overflow

    def check(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs.get("inputs_embeds")
        if isinstance(tokens, torch.Tensor) and tokens.shape[1] + virtual_tokens > limit:
            raise ConfigError(
                [
                    (
                        key,
                        f"{virtual_tokens} virtual tokens + {tokens.shape[1]} input tokens exceed "
                        f"the model's {limit} positions; lower {key} or data.max_length",
                    )
                ]
            )

    model.register_forward_pre_hook(check, with_kwargs=True)
