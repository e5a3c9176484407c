"""The one training path: HF Trainer + tunefleet callbacks, whatever the method.

A trial's value is its best evaluation (not its last), and the checkpoint kept is that
evaluation's; each evaluation is handed to ``report`` so a caller (the Optuna worker) can prune.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import (
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    PrinterCallback,
    TrainerCallback,
    set_seed,
)

from tunefleet.config import SweepConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.arguments import training_arguments
from tunefleet.trainers.callbacks import BestCheckpointCallback, Reporter
from tunefleet.trainers.checkpoint import Manifest, write_checkpoint
from tunefleet.trainers.data import Splits, Table, load_splits
from tunefleet.trainers.evaluation import DomainTrainer, EvaluationRecorder, score_checkpoint
from tunefleet.trainers.gradients import GradientGroups, GradientNormLogger
from tunefleet.trainers.methods import Method, get_method
from tunefleet.trainers.model import load_classifier, load_tokenizer, resolve_model
from tunefleet.trainers.optimization import (
    build_optimizer,
    build_scheduler,
    default_param_groups,
)
from tunefleet.trainers.tokens import (
    EncodedDataset,
    domain_mixture,
    encode,
    encode_unlabelled,
)


@dataclass
class TrialOutcome:
    """What a finished (or pruned) trial produced."""

    value: float | None
    best_epoch: float | None
    metrics: dict[str, float]
    history: list[dict[str, Any]]
    checkpoint: Path | None
    checkpoint_sha256: dict[str, str] | None
    seconds: float
    pruned: bool = False
    trainable_parameters: int = 0
    total_parameters: int = 0


class TrialPruned(Exception):
    """The reporter asked to stop; ``outcome`` holds what the trial reached before that."""

    def __init__(self, outcome: TrialOutcome) -> None:
        super().__init__(
            f"pruned after epoch {outcome.history[-1].get('epoch') if outcome.history else 0}"
        )
        self.outcome = outcome


def count_parameters(model: nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class TrialRequest:
    """Everything a trial needs besides its config; built by the worker (or a test)."""

    sweep: str
    number: int
    params: Mapping[str, Any]
    checkpoint_dir: Path
    work_dir: Path
    cache_dir: Path | None = None
    report: Reporter | None = None
    callbacks: Sequence[TrainerCallback] = ()


def run_trial(config: SweepConfig, request: TrialRequest) -> TrialOutcome:
    """Train one trial; raises TrialPruned (with its outcome) when ``request.report`` says stop."""
    started = time.perf_counter()
    splits = load_splits(config.data)
    resolved = resolve_model(config.model.name_or_path)
    token = config.model.token.get_secret_value() if config.model.token else None
    tokenizer = load_tokenizer(resolved, token=token)
    method = get_method(config.train.method)
    set_seed(config.train.seed)
    model = method.prepare(load_classifier(resolved, splits.label_names, token=token), config.train)

    def encoded(table: Table) -> EncodedDataset:
        return encode(
            table,
            tokenizer=tokenizer,
            label_names=splits.label_names,
            max_length=config.data.max_length,
            cache_dir=request.cache_dir,
        )

    train_set, eval_set = encoded(splits.train), encoded(splits.eval)
    if method.uses_target_rows:
        target_texts = _target_texts(splits, method)
        train_set = domain_mixture(
            train_set,
            encode_unlabelled(
                target_texts,
                tokenizer=tokenizer,
                max_length=config.data.max_length,
                cache_dir=request.cache_dir,
            ),
        )
    target_eval = encoded(splits.target_eval) if splits.target_eval is not None else None
    maximize = config.search.direction == "maximize"
    train = config.train
    evaluations = EvaluationRecorder(splits.label_names)
    checkpoint = BestCheckpointCallback(
        metric=config.search.metric,
        maximize=maximize,
        report=request.report,
        write=_checkpoint_writer(config, request, method, tokenizer, splits, evaluations),
        patience=train.early_stopping.patience if train.early_stopping else None,
        folder=request.checkpoint_dir,
    )
    steps_per_epoch = math.ceil(
        len(train_set) / (train.batch_size * train.gradient_accumulation_steps)
    )
    optimizer = build_optimizer(
        method.param_groups(model, train) or default_param_groups(model, train.weight_decay), train
    )
    gradients = GradientGroups(model, method)
    trainer = DomainTrainer(
        model=model,
        args=training_arguments(
            train,
            output_dir=request.work_dir,
            metric=config.search.metric,
            maximize=maximize,
            steps_per_epoch=steps_per_epoch,
        ),
        optimizers=(
            optimizer,
            build_scheduler(optimizer, train, steps_per_epoch=steps_per_epoch, maximize=maximize),
        ),
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=train_set,
        eval_dataset=eval_set,
        processing_class=tokenizer,
        compute_metrics=evaluations,
        target_eval=target_eval,
        gradient_groups=gradients,
        # Before the caller's callbacks (the trackers): they read the grouped norms it adds.
        callbacks=[
            *method.callbacks(config.train),
            checkpoint,
            GradientNormLogger(gradients),
            *request.callbacks,
        ],
    )
    # The worker prints its own progress; Trainer's printer would interleave raw dicts with it.
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    best = checkpoint.best
    metrics = dict(best.metrics)
    if splits.test is not None and best.hashes is not None and not checkpoint.pruned:
        metrics.update(
            score_checkpoint(
                method,
                request.checkpoint_dir,
                resolved,
                splits,
                config.data.max_length,
                token=token,
            )
        )
    # Counted after training: gradual unfreezing ends with more trainable than it starts.
    trainable, total = count_parameters(model)
    outcome = TrialOutcome(
        value=best.value,
        best_epoch=best.epoch,
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
        history=[_finite(entry) for entry in trainer.state.log_history],
        checkpoint=request.checkpoint_dir if best.hashes is not None else None,
        checkpoint_sha256=best.hashes,
        seconds=time.perf_counter() - started,
        pruned=checkpoint.pruned,
        trainable_parameters=trainable,
        total_parameters=total,
    )
    if checkpoint.pruned:
        raise TrialPruned(outcome)
    return outcome


def _target_texts(splits: Splits, method: Method) -> tuple[str, ...]:
    """The target-domain training texts a method asked for; their labels never leave here."""
    if splits.target_train is None:
        raise ConfigError(
            [
                (
                    "train.method",
                    f"{method.name} trains on target-domain rows: set data.domain_column, "
                    "data.source_domains and data.target_domains",
                )
            ]
        )
    return splits.target_train.texts


def _finite(entry: Mapping[str, Any]) -> dict[str, Any]:
    """A log entry with diverged values (NaN, inf) as None: they are facts, not JSON numbers."""
    return {
        k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in entry.items()
    }


def _checkpoint_writer(
    config: SweepConfig,
    request: TrialRequest,
    method: Method,
    tokenizer: PreTrainedTokenizerBase,
    splits: Splits,
    evaluations: EvaluationRecorder,
) -> Callable[[nn.Module, float, float], dict[str, str]]:
    def write(model: nn.Module, value: float, epoch: float) -> dict[str, str]:
        manifest = Manifest(
            method=method.name,
            base_model=config.model.name_or_path,
            label_names=splits.label_names,
            max_length=config.data.max_length,
            sweep=request.sweep,
            trial=request.number,
            metric=config.search.metric,
            value=value,
            epoch=epoch,
            params=dict(request.params),
            config=config.model_dump(mode="json"),
            data_sha256=splits.fingerprint(),
        )
        return write_checkpoint(
            request.checkpoint_dir,
            model=model,
            save=method.save,
            tokenizer=tokenizer,
            manifest=manifest,
            evaluation=evaluations.report,  # written during the evaluation that chose it
        )

    return write
