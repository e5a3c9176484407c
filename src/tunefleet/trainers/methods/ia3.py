"""IA3 through peft: learned vectors rescale chosen activations; the head trains fully.

A target that is also a feed-forward module is scaled on its input (a vector of in_features),
any other target on its output (out_features).

Left null, ``target_modules`` and ``feedforward_modules`` are the architecture's defaults from
the table (``tunefleet.trainers.architectures``), else peft's own for the model type: keys,
values and the feed-forward output projection, which is the feed-forward module. For BERT that
is ``key``, ``value`` and ``output.dense``, which as a suffix matches both the attention output
and the FFN output projection; for Llama-style decoders ``k_proj``, ``v_proj`` and
``down_proj``; for GPT-2 ``c_attn`` (queries, keys and values in one) and ``mlp.c_proj``.
"""

from __future__ import annotations

import re

from peft import IA3Config, PeftConfig, TaskType
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.architectures import ARCHITECTURES
from tunefleet.trainers.methods._peft import PeftMethod, target_problem
from tunefleet.trainers.methods.registry import register

TARGETS = "train.ia3.target_modules"
FEEDFORWARD = "train.ia3.feedforward_modules"


@register("ia3")
class Ia3(PeftMethod):
    # The scaling vectors, ``ia3_l.<adapter>``: a ParameterDict, so the name ends there.
    own_pattern = re.compile(r"(?:^|\.)ia3_\w+(?:\.|$)")

    def validate(self, model: PreTrainedModel, config: TrainConfig) -> None:
        targets, feedforward = _modules(model, config)
        if targets is not None and feedforward is not None and not set(feedforward) <= set(targets):
            # peft says only "should be a subset"; name what is extra.
            extra = sorted(set(feedforward) - set(targets))
            raise ConfigError([(FEEDFORWARD, f"{extra} are not among {TARGETS} {targets}")])

    def peft_config(self, model: PreTrainedModel, config: TrainConfig) -> PeftConfig:
        targets, feedforward = _modules(model, config)
        return IA3Config(
            task_type=TaskType.SEQ_CLS, target_modules=targets, feedforward_modules=feedforward
        )

    def problem(
        self, exc: ValueError, model: PreTrainedModel, config: TrainConfig
    ) -> tuple[str, str]:
        # peft has no default feed-forward list for this architecture.
        if "feedforward_modules" in str(exc):
            return FEEDFORWARD, f"needed for this architecture (peft: {exc})"
        return target_problem(TARGETS, _modules(model, config)[0], model, exc)


def _modules(model: PreTrainedModel, config: TrainConfig) -> tuple[list[str] | None, ...]:
    """(target_modules, feedforward_modules): the user's, else, for targets left null, the
    table's pair (a feed-forward list the user gave is kept); None leaves it to peft."""
    targets, feedforward = config.ia3.target_modules, config.ia3.feedforward_modules
    row = ARCHITECTURES.get(str(model.config.model_type))
    if targets is None and row is not None:
        targets = list(row.ia3_targets)
        feedforward = list(row.ia3_feedforward) if feedforward is None else feedforward
    return (
        list(targets) if targets is not None else None,
        list(feedforward) if feedforward is not None else None,
    )
