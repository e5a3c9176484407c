"""What the peft-based methods share: wrapping a model with peft's errors turned into config
errors, the adapter-only checkpoint, and the ``owns`` pattern; a method module is left with its
config mapping and its error mapping.

A peft checkpoint holds only the adapter and the head (peft's ``modules_to_save``, which for
sequence classification is the ``classifier``/``score`` module, not the pooler), a few MB, and is
restored onto the pretrained body that ``base()`` builds.
"""

from __future__ import annotations

import inspect
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from peft import PeftConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.methods.base import BaseFactory, MethodBase

#: The soft prompt / prefix (and its projection MLP) that prompt and prefix tuning train.
PROMPT_ENCODER = re.compile(r"(?:^|\.)prompt_encoder\.")


class PeftMethod(MethodBase, ABC):
    """The skeleton of a method whose ``prepare`` returns a :class:`PeftModel`.

    ``prepare`` runs the checks peft would only fail on mid-trial (``validate``), wraps the model
    with ``get_peft_model(model, peft_config(...))`` and hands the wrapped model to ``finish``.
    peft validates both while building its config and while matching it against the model, so
    both happen under ``problem``, which turns peft's ValueError into the (config key,
    explanation) a user can act on. A subclass sets ``own_pattern`` (the names of the parameters
    peft adds) and writes ``peft_config`` and ``problem``.
    """

    self_contained = False
    own_pattern: ClassVar[re.Pattern[str]]

    @abstractmethod
    def peft_config(self, model: PreTrainedModel, config: TrainConfig) -> PeftConfig:
        """The peft config for these settings (``task_type`` sequence classification)."""

    @abstractmethod
    def problem(
        self, exc: ValueError, model: PreTrainedModel, config: TrainConfig
    ) -> tuple[str, str]:
        """The config key to blame for peft's refusal ``exc``, and why."""

    def validate(self, model: PreTrainedModel, config: TrainConfig) -> None:
        """Raise ConfigError for settings peft accepts but that cannot work; none by default."""

    def finish(self, model: PeftModel, config: TrainConfig) -> None:
        """Adjust the wrapped model in place; nothing by default."""

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        self.validate(model, config)
        try:
            wrapped = get_peft_model(model, self.peft_config(model, config))
        except ValueError as exc:
            raise ConfigError([self.problem(exc, model, config)]) from None
        assert isinstance(wrapped, PeftModel)  # mixed=False, the default, always gives a PeftModel
        self.finish(wrapped, config)
        return wrapped

    def save(self, model: nn.Module, folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)  # type: ignore[operator]

    def load(self, folder: Path, base: BaseFactory) -> nn.Module:
        return PeftModel.from_pretrained(base(), folder)

    def owns(self, parameter_name: str) -> bool:
        return self.own_pattern.search(parameter_name) is not None


class VirtualTokenMethod(PeftMethod):
    """Prompt and prefix tuning: they train ``prompt_encoder``, peft's refusals concern the
    number of virtual tokens (``tokens_key``), and the tokens must fit the position table."""

    own_pattern = PROMPT_ENCODER
    tokens_key: ClassVar[str]

    @abstractmethod
    def virtual_tokens(self, config: TrainConfig) -> int: ...

    def problem(
        self, exc: ValueError, model: PreTrainedModel, config: TrainConfig
    ) -> tuple[str, str]:
        return self.tokens_key, f"peft refused it: {exc}"

    def finish(self, model: PeftModel, config: TrainConfig) -> None:
        guard_positions(model, self.virtual_tokens(config), self.tokens_key)


def target_problem(
    key: str, value: Sequence[str] | None, model: nn.Module, exc: ValueError
) -> tuple[str, str]:
    """For module-targeting methods: name the bad key and list what could have been targeted."""
    asked = "peft's default targets" if value is None else list(value)
    return (
        key,
        f"{asked} adapted nothing ({exc}); "
        f"linear modules of this model: {', '.join(linear_module_names(model))}",
    )


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
