"""Gradual unfreezing (ULMFiT, Howard & Ruder 2018) with discriminative learning rates.

At first only the head trains; every ``every_epochs`` epochs the next ``blocks_per_step``
transformer blocks unfreeze top-down, and one step after the bottom block the embeddings do.
Blocks and embeddings are where the architecture table says (``tunefleet.trainers.architectures``):
``encoder.layer.N`` in BERT, ``transformer.h.N`` in GPT-2, ``model.layers.N`` in Llama, Mistral
and Qwen2.

The head is every parameter that is neither in a block nor an embedding: the classifier and what
sits between the top block and it (BERT's pooler, DistilBERT's pre_classifier, GPT-2's ``ln_f``,
Llama's final norm). These feed the fresh classifier directly, so freezing them would leave a
random classifier reading features it cannot adapt.

Mechanism: the optimizer holds every parameter from the first step, one group per unit (head,
each block, embeddings) with its ``lr_scale``; frozen ones have ``requires_grad=False``, so their
``.grad`` stays None and AdamW skips them (no moments, no weight decay) until the callback flips
the flag at an epoch start. The optimizer is never rebuilt, so parameters already training keep
their moments and step counts. Single process only in effect: DDP registers gradient hooks just
for the parameters trainable when it wraps the model, so later-unfrozen ones would not sync.

A checkpoint is the whole model, as with ``full``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import (
    PreTrainedModel,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from tunefleet.config import TrainConfig, UnfreezeConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.architectures import ARCHITECTURES, Architecture
from tunefleet.trainers.methods.full import FullFineTuning
from tunefleet.trainers.methods.registry import register
from tunefleet.trainers.optimization import NO_DECAY

logger = logging.getLogger(__name__)

Named = list[tuple[str, nn.Parameter]]


@dataclass(frozen=True)
class Units:
    """A model's parameters by unfreezing unit, in unfreezing order."""

    head: Named
    blocks: list[tuple[int, Named]]
    """(block index, its parameters), top block first."""
    embeddings: Named

    def ordered(self, decay: float) -> list[tuple[str, Named, float]]:
        """(unit name, parameters, lr scale) from the head down: a block at depth d below the
        head gets decay**d, the embeddings decay**(blocks + 1)."""
        units = [("head", self.head, 1.0)]
        units += [
            (f"block.{index}", params, decay**depth)
            for depth, (index, params) in enumerate(self.blocks, start=1)
        ]
        units.append(("embeddings", self.embeddings, decay ** (len(self.blocks) + 1)))
        return [unit for unit in units if unit[1]]


def units_of(model: nn.Module) -> Architecture:
    """The table row that says where ``model`` keeps its blocks and embeddings."""
    model_type = str(getattr(getattr(model, "config", None), "model_type", ""))
    row = ARCHITECTURES.get(model_type)
    if row is None:
        raise ConfigError(
            [
                (
                    "train.method",
                    f"unfreeze does not know where {type(model).__name__} (model type "
                    f"{model_type!r}) keeps its blocks; supported model types: "
                    f"{', '.join(sorted(ARCHITECTURES))}",
                )
            ]
        )
    return row


def split_units(model: nn.Module) -> Units:
    row = units_of(model)
    block, embedding = row.block_pattern(), row.embeddings_pattern()
    head: Named = []
    embeddings: Named = []
    blocks: dict[int, Named] = {}
    for name, param in model.named_parameters():
        if match := block.search(name):
            blocks.setdefault(int(match.group(1)), []).append((name, param))
        elif embedding.search(name):
            embeddings.append((name, param))
        else:
            head.append((name, param))
    return Units(head, sorted(blocks.items(), reverse=True), embeddings)


def unfrozen_at(step: int, blocks: int, blocks_per_step: int) -> tuple[int, bool]:
    """(top blocks trainable, embeddings trainable) after ``step`` unfreezing steps."""
    block_steps = math.ceil(blocks / blocks_per_step)
    return min(blocks, step * blocks_per_step), step > block_steps


def apply_schedule(model: nn.Module, settings: UnfreezeConfig, *, epoch: int) -> None:
    """Set ``requires_grad`` for the start of ``epoch`` (0-based); idempotent."""
    units = split_units(model)
    open_blocks, open_embeddings = unfrozen_at(
        epoch // settings.every_epochs, len(units.blocks), settings.blocks_per_step
    )
    trainable = [(units.head, True), (units.embeddings, open_embeddings)]
    trainable += [(params, depth < open_blocks) for depth, (_, params) in enumerate(units.blocks)]
    for params, flag in trainable:
        for _, param in params:
            param.requires_grad_(flag)


class GradualUnfreezing(TrainerCallback):
    """Unfreezes on schedule at each epoch start (epoch k * every_epochs, k >= 1)."""

    def __init__(self, settings: UnfreezeConfig) -> None:
        self.settings = settings

    def on_epoch_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        **kwargs: Any,
    ) -> None:
        epoch = _epochs_done(state, args)
        model: nn.Module = kwargs["model"]
        before = _trainable(model)
        apply_schedule(model, self.settings, epoch=epoch)
        after = _trainable(model)
        if after != before:
            logger.info("unfreeze: epoch %d trains %d parameters (was %d)", epoch, after, before)


def _epochs_done(state: TrainerState, args: TrainingArguments) -> int:
    """Finished epochs, from the global step: after a resume from a mid-epoch stop,
    ``state.epoch`` is fractional here (1.5 is epoch 1, which ``round`` would call 2)."""
    epochs = round(args.num_train_epochs)
    if state.max_steps > 0 and epochs > 0 and state.max_steps % epochs == 0:
        return state.global_step // (state.max_steps // epochs)
    return math.floor((state.epoch or 0.0) + 1e-6)


def _trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@register("unfreeze")
class Unfreeze(FullFineTuning):
    """Saves and loads like ``full`` (so self-contained too); differs in what trains when, and
    at what rate."""

    def prepare(self, model: PreTrainedModel, config: TrainConfig) -> nn.Module:
        # Correct before the first callback, so counts and checks on the prepared model hold.
        apply_schedule(model, config.unfreeze, epoch=0)
        return model

    def callbacks(self, config: TrainConfig) -> list[TrainerCallback]:
        return [GradualUnfreezing(config.unfreeze)]

    def param_groups(self, model: nn.Module, config: TrainConfig) -> list[dict[str, Any]] | None:
        """Every parameter, frozen or not, so unfreezing never rebuilds the optimizer: per unit a
        decayed group and one for biases and norms, each with the unit's ``lr_scale``."""
        groups: list[dict[str, Any]] = []
        for unit, params, scale in split_units(model).ordered(config.unfreeze.layer_lr_decay):
            decay = [p for name, p in params if not any(m in name for m in NO_DECAY)]
            no_decay = [p for name, p in params if any(m in name for m in NO_DECAY)]
            for members, weight_decay in ((decay, config.weight_decay), (no_decay, 0.0)):
                if members:
                    groups.append(
                        {
                            "params": members,
                            "weight_decay": weight_decay,
                            "lr_scale": scale,
                            "unit": unit,
                        }
                    )
        return groups
