"""The optimizer and learning-rate schedule of a trial, built here rather than by Trainer so that
methods can shape parameter groups (discriminative rates) and schedules can be ones Trainer lacks
(cosine with warm restarts whose cycles grow)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau
from transformers import get_scheduler

from tunefleet.config import TrainConfig

NO_DECAY = (
    "bias",
    "LayerNorm.weight",
    "layer_norm.weight",
    "layernorm.weight",
    "ln_",
    "norm.weight",
)


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters in two groups: decayed weights, and biases/norms without decay."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if any(marker in name for marker in NO_DECAY) else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def build_optimizer(groups: list[dict[str, Any]], train: TrainConfig) -> Optimizer:
    """AdamW over ``groups``; a group may carry its own ``lr`` (a multiple of the peak rate is
    given as ``lr_scale``, so schedules scale every group alike)."""
    for group in groups:
        group.setdefault("lr", train.learning_rate * group.pop("lr_scale", 1.0))
    # The fused kernel, as Trainer's own default (``adamw_torch_fused``): on CPU the default
    # per-tensor loop costs about a fifth of MiniLM's training step (benchmarks/telemetry.py).
    return torch.optim.AdamW(
        groups, lr=train.learning_rate, weight_decay=train.weight_decay, fused=True
    )


def warm_restarts(warmup: int, first_cycle: int, t_mult: float) -> Callable[[int], float]:
    """SGDR (Loshchilov & Hutter): cosine cycles from the peak to 0, each ``t_mult`` times the
    last, after a linear warmup."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        position, length = float(step - warmup), float(max(1, first_cycle))
        while position >= length:
            position -= length
            length *= t_mult
        return 0.5 * (1.0 + math.cos(math.pi * position / length))

    return factor


def build_scheduler(
    optimizer: Optimizer, train: TrainConfig, *, steps_per_epoch: int, maximize: bool
) -> LRScheduler | ReduceLROnPlateau:
    total = max(1, steps_per_epoch * train.epochs)
    warmup = round(train.warmup_ratio * total)
    if train.scheduler == "cosine_with_restarts":
        cycle = max(1, round(train.restarts.t0_epochs * steps_per_epoch))
        return LambdaLR(optimizer, warm_restarts(warmup, cycle, train.restarts.t_mult))
    if train.scheduler == "reduce_on_plateau":
        # Stepped by Trainer after each evaluation with the objective (metric_for_best_model).
        return ReduceLROnPlateau(
            optimizer, mode="max" if maximize else "min", factor=0.5, patience=0
        )
    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[
        train.scheduler
    ]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total)  # type: ignore[no-any-return]
