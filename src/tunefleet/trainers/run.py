"""The one training path: HF Trainer + tunefleet callbacks, whatever the method.

A trial's value is its best evaluation (not its last), and the checkpoint kept is that
evaluation's; each evaluation is handed to ``report`` so a caller (the Optuna worker) can prune.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import (
    DataCollatorWithPadding,
    EvalPrediction,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import EvalLoopOutput

from tunefleet.config import SweepConfig, TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.checkpoint import Manifest, write_checkpoint
from tunefleet.trainers.data import Splits, Table, load_splits
from tunefleet.trainers.methods import Method, get_method
from tunefleet.trainers.metrics import classification_metrics, cross_entropy
from tunefleet.trainers.model import load_classifier, load_tokenizer, resolve_model
from tunefleet.trainers.optimization import (
    build_optimizer,
    build_scheduler,
    default_param_groups,
)
from tunefleet.trainers.predict import batched_logits
from tunefleet.trainers.tokens import (
    EncodedDataset,
    domain_mixture,
    encode,
    encode_unlabelled,
)

Reporter = Callable[[int, float], bool]
"""Called with (epoch, objective value) after each evaluation; True asks to stop (prune)."""

TARGET_PREFIX = "eval_target"
TARGET_METRICS = ("accuracy", "f1")
"""Scored on the held-out target-domain rows at every evaluation, as ``eval_target_<name>``."""


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


@dataclass
class _Best:
    value: float | None = None
    epoch: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    hashes: dict[str, str] | None = None


class BestCheckpointCallback(TrainerCallback):
    """Keeps the best evaluation's checkpoint and reports every evaluation for pruning."""

    def __init__(
        self,
        *,
        metric: str,
        maximize: bool,
        write: Callable[[nn.Module, float, float], dict[str, str]],
        report: Reporter | None,
        patience: int | None = None,
    ) -> None:
        self.metric, self.maximize, self.write, self.report = metric, maximize, write, report
        self.patience = patience
        self.best = _Best()
        self.pruned = False
        self.stale = 0
        """Evaluations since the objective last improved (for early stopping)."""

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ) -> None:
        if not metrics or self.metric not in metrics:
            raise KeyError(
                f"search.metric {self.metric!r} is not among the eval metrics: "
                f"{', '.join(sorted(metrics or {}))}"
            )
        value, epoch = float(metrics[self.metric]), float(state.epoch or 0)
        if self._better(value):
            self.best = _Best(
                value,
                epoch,
                {k: float(v) for k, v in metrics.items() if isinstance(v, int | float)},
            )
            self.best.hashes = self.write(kwargs["model"], value, epoch)
            self.stale = 0
        else:
            self.stale += 1
            if self.patience is not None and self.stale >= self.patience:
                control.should_training_stop = True
        if self.report is not None and self.report(round(epoch), value):
            self.pruned = True
            control.should_training_stop = True

    def _better(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best.value is None:
            return True
        return value > self.best.value if self.maximize else value < self.best.value


class DomainTrainer(Trainer):
    """Trainer whose every evaluation also scores the held-out target-domain rows, whatever the
    method, so a source-only baseline and dann are compared on the same numbers.

    The target pass is folded into the one evaluation: a dict of eval datasets would make Trainer
    log and fire ``on_evaluate`` once per dataset (BestCheckpointCallback and the trackers would
    see source and target metrics in separate dicts), and a per-row domain flag passed as an extra
    label would be handed to every method's ``forward`` and mix target rows into ``eval_loss``.
    Here ``eval_loss`` stays the source task loss and ``eval_target_*`` join the same metrics.
    """

    def __init__(self, *args: Any, target_eval: Dataset[Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.target_eval = target_eval

    def evaluation_loop(
        self,
        dataloader: DataLoader[Any],
        description: str,
        prediction_loss_only: bool | None = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
    ) -> EvalLoopOutput:
        output = super().evaluation_loop(
            dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix
        )
        # Only Trainer's own evaluations ("eval"): not predict(), not the target pass itself.
        if self.target_eval is None or metric_key_prefix != "eval":
            return output
        target = super().evaluation_loop(
            self.get_eval_dataloader(self.target_eval),
            description,
            prediction_loss_only,
            ignore_keys,
            TARGET_PREFIX,
        )
        assert output.metrics is not None and target.metrics is not None  # always a dict here
        for name in TARGET_METRICS:
            key = f"{TARGET_PREFIX}_{name}"
            output.metrics[key] = target.metrics[key]
        return output


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    logits = (
        prediction.predictions[0]
        if isinstance(prediction.predictions, tuple)
        else prediction.predictions
    )
    labels = np.asarray(prediction.label_ids)
    return classification_metrics(np.asarray(logits), labels)


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
        eval_strategy="epoch",
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
    tokenizer = load_tokenizer(resolved)
    method = get_method(config.train.method)
    set_seed(config.train.seed)
    model = method.prepare(load_classifier(resolved, splits.label_names), config.train)

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
    checkpoint = BestCheckpointCallback(
        metric=config.search.metric,
        maximize=maximize,
        report=request.report,
        write=_checkpoint_writer(config, request, method, tokenizer, splits),
        patience=train.early_stopping.patience if train.early_stopping else None,
    )
    steps_per_epoch = math.ceil(
        len(train_set) / (train.batch_size * train.gradient_accumulation_steps)
    )
    optimizer = build_optimizer(
        method.param_groups(model, train) or default_param_groups(model, train.weight_decay), train
    )
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
        compute_metrics=compute_metrics,
        target_eval=target_eval,
        callbacks=[*method.callbacks(config.train), checkpoint, *request.callbacks],
    )
    # The worker prints its own progress; Trainer's printer would interleave raw dicts with it.
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    best = checkpoint.best
    metrics = dict(best.metrics)
    if splits.test is not None and best.hashes is not None and not checkpoint.pruned:
        metrics.update(
            score_checkpoint(
                method, request.checkpoint_dir, resolved, splits, config.data.max_length
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
        )

    return write


def score_checkpoint(
    method: Method, folder: Path, resolved: str, splits: Splits, max_length: int
) -> dict[str, float]:
    """Test-set metrics of the saved best checkpoint (reloaded, so the file itself is tested)."""
    assert splits.test is not None

    def base() -> PreTrainedModel:
        return load_classifier(resolved, splits.label_names)

    model = method.load(folder, base)
    model.eval()
    logits = batched_logits(
        model, load_tokenizer(str(folder)), splits.test.texts, max_length=max_length
    )
    index = {name: i for i, name in enumerate(splits.label_names)}
    labels = np.array([index[label] for label in splits.test.labels])
    scores = classification_metrics(logits, labels)
    return {
        "test_accuracy": scores["accuracy"],
        "test_f1": scores["f1"],
        "test_loss": cross_entropy(logits, labels),
    }
