"""IA3 through peft: learned vectors rescale chosen activations; the head trains fully.

A target that is also a feed-forward module is scaled on its input (a vector of in_features),
any other target on its output (out_features). For BERT peft's defaults are
``key``, ``value`` and ``output.dense`` with ``output.dense`` feed-forward; as a suffix it matches
both the attention output and the FFN output projection.
"""

from __future__ import annotations

import re

from peft import IA3Config, PeftConfig, TaskType
from torch import nn
from transformers import PreTrainedModel

from tunefleet.config import TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.methods._peft import PeftMethod, attach, target_problem
from tunefleet.trainers.methods.registry import register

TARGETS = "train.ia3.target_modules"
FEEDFORWARD = "train.ia3.feedforward_modules"
# The scaling vectors, ``ia3_l.<adapter>``: a ParameterDict, so the name ends there.
OWN = re.compile(r"(?:^|\.)ia3_\w+(?:\.|$)")


@register("ia3")
class Ia3(PeftMethod):
    name = "ia3"

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        settings = config.ia3
        targets, feedforward = settings.target_modules, settings.feedforward_modules
        if targets is not None and feedforward is not None and not set(feedforward) <= set(targets):
            # peft says only "should be a subset"; name what is extra.
            extra = sorted(set(feedforward) - set(targets))
            raise ConfigError([(FEEDFORWARD, f"{extra} are not among {TARGETS} {targets}")])

        def make_config() -> PeftConfig:
            return IA3Config(
                task_type=TaskType.SEQ_CLS,
                target_modules=list(targets) if targets is not None else None,
                feedforward_modules=list(feedforward) if feedforward is not None else None,
            )

        on_targets = target_problem(TARGETS, targets, model)

        def problem(exc: ValueError) -> tuple[str, str]:
            # peft has no default feed-forward list for this architecture.
            if "feedforward_modules" in str(exc):
                return FEEDFORWARD, f"needed for this architecture (peft: {exc})"
            return on_targets(exc)

        return attach(model, make_config, problem)

    def owns(self, parameter_name: str) -> bool:
        return OWN.search(parameter_name) is not None
