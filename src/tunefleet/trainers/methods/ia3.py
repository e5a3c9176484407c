"""IA3 through peft: learned vectors rescale chosen activations; the head trains fully.

A target that is also a feed-forward module is scaled on its input (a vector of in_features),
any other target on its output (out_features). For BERT peft's defaults are
``key``, ``value`` and ``output.dense`` with ``output.dense`` feed-forward; as a suffix it matches
both the attention output and the FFN output projection.
"""

from __future__ import annotations

import re

from peft import IA3Config, PeftConfig, TaskType
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.methods._peft import PeftMethod, target_problem
from tunefleet.trainers.methods.registry import register

TARGETS = "train.ia3.target_modules"
FEEDFORWARD = "train.ia3.feedforward_modules"


@register("ia3")
class Ia3(PeftMethod):
    # The scaling vectors, ``ia3_l.<adapter>``: a ParameterDict, so the name ends there.
    own_pattern = re.compile(r"(?:^|\.)ia3_\w+(?:\.|$)")

    def validate(self, model: PreTrainedModel, config: TrainConfig) -> None:
        targets, feedforward = config.ia3.target_modules, config.ia3.feedforward_modules
        if targets is not None and feedforward is not None and not set(feedforward) <= set(targets):
            # peft says only "should be a subset"; name what is extra.
            extra = sorted(set(feedforward) - set(targets))
            raise ConfigError([(FEEDFORWARD, f"{extra} are not among {TARGETS} {targets}")])

    def peft_config(self, model: PreTrainedModel, config: TrainConfig) -> PeftConfig:
        targets, feedforward = config.ia3.target_modules, config.ia3.feedforward_modules
        return IA3Config(
            task_type=TaskType.SEQ_CLS,
            target_modules=list(targets) if targets is not None else None,
            feedforward_modules=list(feedforward) if feedforward is not None else None,
        )

    def problem(
        self, exc: ValueError, model: PreTrainedModel, config: TrainConfig
    ) -> tuple[str, str]:
        # peft has no default feed-forward list for this architecture.
        if "feedforward_modules" in str(exc):
            return FEEDFORWARD, f"needed for this architecture (peft: {exc})"
        return target_problem(TARGETS, config.ia3.target_modules, model, exc)
