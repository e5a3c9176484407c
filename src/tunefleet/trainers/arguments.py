"""Trainer's settings for a trial, and the device checks they need."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from transformers import TrainingArguments

from tunefleet.config import TrainConfig
from tunefleet.errors import ConfigError


def training_arguments(
    train: TrainConfig, *, output_dir: Path, metric: str, maximize: bool, steps_per_epoch: int
) -> TrainingArguments:
    """Trainer's settings; the optimizer and schedule come from ``trainers.optimization``."""
    check_precision(train.precision)
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=max(train.batch_size, 32),
        gradient_accumulation_steps=train.gradient_accumulation_steps,
        num_train_epochs=train.epochs,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        # Trainer steps ReduceLROnPlateau with this metric after each evaluation.
        metric_for_best_model=metric,
        greater_is_better=maximize,
        max_grad_norm=train.max_grad_norm,
        bf16=train.precision == "bf16",
        use_cpu=not torch.cuda.is_available(),  # bf16 on CPU (autocast) needs it said
        fp16=train.precision == "fp16",
        activation_checkpointing=train.gradient_checkpointing,
        # Non-reentrant checkpointing needs no input gradients, so frozen embeddings (peft) work.
        activation_checkpointing_kwargs={"use_reentrant": False},
        seed=train.seed,
        **_evaluation_schedule(train, steps_per_epoch),
        save_strategy="no",  # BestCheckpointCallback keeps the one checkpoint worth keeping
        logging_strategy="steps",
        logging_steps=max(1, min(train.logging_steps, steps_per_epoch)),
        report_to=[],
        # Explicit, not inferred from forward's signature: dann's ``domain_labels`` is a training
        # target, not something evaluation gathers for compute_metrics.
        label_names=["labels"],
        disable_tqdm=True,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def eval_interval(train: TrainConfig, steps_per_epoch: int) -> int:
    """Optimizer steps between evaluations (``train.eval_every``; an epoch when unset)."""
    every = train.eval_every
    if every is None:
        return steps_per_epoch
    if isinstance(every, int):
        return every
    return max(1, math.ceil(every * steps_per_epoch))


def _evaluation_schedule(train: TrainConfig, steps_per_epoch: int) -> dict[str, Any]:
    # Trainer also evaluates at the last step under the steps strategy, so a trial always ends
    # on an evaluation (the one the pruner never prunes).
    if train.eval_every is None:
        return {"eval_strategy": "epoch"}
    return {"eval_strategy": "steps", "eval_steps": eval_interval(train, steps_per_epoch)}


def check_precision(precision: str) -> None:
    """Refuse a precision this worker's device cannot run, naming the option."""
    if precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(
            [
                (
                    "train.precision",
                    "fp16 needs a CUDA GPU and this worker has none; "
                    "use bf16 (CPU autocast) or fp32",
                )
            ]
        )
    if precision == "bf16" and torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        raise ConfigError(
            [
                (
                    "train.precision",
                    f"bf16 is not supported by {torch.cuda.get_device_name()}; use fp16 or fp32",
                )
            ]
        )
