"""The one training path: HF Trainer + tunefleet callbacks, whatever the method.

A trial's value is its best evaluation (not its last), and the checkpoint kept is that
evaluation's; each evaluation is handed to ``report`` so a caller (the Optuna worker) can prune.
With a ``resume_dir``, the trial keeps its resumable state there and continues from it when it
finds one (trainers/resume.py); a trial that does not complete raises TrialPruned,
TrialInterrupted, NonFiniteError or TrialOutOfMemory.
"""

from __future__ import annotations

import gc
import math
import shutil
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, ReduceLROnPlateau
from transformers import (
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    PrinterCallback,
    TrainerCallback,
    set_seed,
)

from tunefleet.config import SweepConfig, parse_constraint
from tunefleet.errors import ConfigError
from tunefleet.trainers.arguments import training_arguments
from tunefleet.trainers.callbacks import BestCheckpointCallback, Reporter
from tunefleet.trainers.checkpoint import Manifest, write_checkpoint
from tunefleet.trainers.data import Splits, Table, load_splits
from tunefleet.trainers.device import check_weights
from tunefleet.trainers.evaluation import EvaluationRecorder, score_checkpoint
from tunefleet.trainers.gradients import GradientGroups, GradientNormLogger
from tunefleet.trainers.measures import count_parameters, fixed_batch, folder_mb, latency_ms
from tunefleet.trainers.methods import Method, get_method
from tunefleet.trainers.model import load_classifier, load_tokenizer, resolve_model
from tunefleet.trainers.optimization import (
    build_optimizer,
    build_scheduler,
    default_param_groups,
)
from tunefleet.trainers.resume import (
    StopRequested,
    TrialInterrupted,
    TrialOutOfMemory,
    read_record,
    recover,
)
from tunefleet.trainers.tokens import (
    EncodedDataset,
    domain_mixture,
    encode,
    encode_unlabelled,
)
from tunefleet.trainers.trainer import Resumable, TunefleetTrainer


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
    measured: dict[str, float] = field(default_factory=dict)
    """trainable_params, total_params, train_seconds, and for a trial that finished with a
    checkpoint checkpoint_mb and (when an objective or constraint names it) latency_ms."""


class TrialPruned(Exception):
    """The reporter asked to stop; ``outcome`` holds what the trial reached before that."""

    def __init__(self, outcome: TrialOutcome) -> None:
        super().__init__(
            f"pruned after epoch {outcome.history[-1].get('epoch') if outcome.history else 0}"
        )
        self.outcome = outcome


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
    resume_dir: Path | None = None
    """The logical trial's resumable state: written at every evaluation, resumed from when
    complete at the start; never deleted here (the caller does, when the trial ends)."""
    stop: threading.Event | None = None
    """Set (from another thread) to end after the current optimizer step with the resumable
    state written: run_trial then raises TrialInterrupted."""


@dataclass(frozen=True)
class _Model:
    """The trial's model, prepared by its method, and what loading it resolved."""

    resolved: str
    """The local folder or hub id ``model.name_or_path`` resolved to."""
    token: str | None
    tokenizer: PreTrainedTokenizerBase
    method: Method
    module: nn.Module


@dataclass(frozen=True)
class _Data:
    """The encoded datasets Trainer gets."""

    train: EncodedDataset
    eval: EncodedDataset
    target_eval: EncodedDataset | None


def run_trial(config: SweepConfig, request: TrialRequest) -> TrialOutcome:
    """Train one trial; raises TrialPruned (with its outcome) when ``request.report`` says stop,
    TrialInterrupted (with the outcome so far) when ``request.stop`` is set, NonFiniteError when
    the loss or gradient norm diverges and TrialOutOfMemory when memory runs out."""
    started = time.perf_counter()
    splits = load_splits(config.data)
    model = _setup_model(config, splits)
    data = _setup_data(config, request, splits, model)
    evaluations = EvaluationRecorder(splits.label_names)
    checkpoint = _setup_checkpoint(config, request, model, splits, evaluations)
    trainer = _setup_trainer(config, request, model, data, checkpoint, evaluations)
    resume_from = recover(request.resume_dir) if request.resume_dir is not None else None
    if resume_from is not None:
        kept = read_record(resume_from)["callbacks"]
        checkpoint.restore(kept)
        _carry_best_checkpoint(kept.get("folder"), request.checkpoint_dir)
    try:
        trainer.train(resume_from_checkpoint=None if resume_from is None else str(resume_from))
        # Scoring the test split overlaps the final evaluation's state write.
        outcome = _outcome(
            config, request, model, splits, checkpoint, trainer.state.log_history, started=started
        )
        if not outcome.pruned:
            outcome.measured.update(_measure(config, model, data, outcome))
    except StopRequested as stop:
        history = trainer.state.log_history
        so_far = _outcome(
            config, request, model, splits, checkpoint, history, started=started, score=False
        )
        raise TrialInterrupted(stop.step, so_far) from None
    except (torch.cuda.OutOfMemoryError, MemoryError) as error:
        gc.collect()  # what the failed step held, before the caller retries in this process
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        train = config.train
        raise TrialOutOfMemory(train.batch_size, train.gradient_accumulation_steps) from error
    finally:
        trainer.writer.wait()  # however the trial ends, the last state written is whole
    if outcome.pruned:
        raise TrialPruned(outcome)
    return outcome


def _carry_best_checkpoint(recorded: str | None, folder: Path) -> None:
    """A retry writing its checkpoint elsewhere than the attempt it resumes (a new trial number)
    starts from a copy of that attempt's best checkpoint, which the resumed best-so-far names."""
    if recorded is None or Path(recorded) == folder or folder.exists():
        return
    if Path(recorded).is_dir():
        shutil.copytree(recorded, folder)


def _setup_model(config: SweepConfig, splits: Splits) -> _Model:
    check_weights(config.model, config.train)  # this worker's device, this trial's settings
    resolved = resolve_model(config.model.name_or_path)
    token = config.model.token.get_secret_value() if config.model.token else None
    tokenizer = load_tokenizer(resolved, pad_token=config.model.pad_token, token=token)
    method = get_method(config.train.method)
    set_seed(config.train.seed)
    classifier = load_classifier(
        resolved,
        splits.label_names,
        pad_token_id=tokenizer.pad_token_id,
        token=token,
        dtype=config.model.dtype,
        quantization=config.model.quantization,
    )
    return _Model(resolved, token, tokenizer, method, method.prepare(classifier, config.train))


def _setup_data(config: SweepConfig, request: TrialRequest, splits: Splits, model: _Model) -> _Data:
    """Encoded (through the token cache) splits; a method that trains on target-domain rows gets
    them mixed into its training set, unlabelled."""

    def encoded(table: Table) -> EncodedDataset:
        return encode(
            table,
            tokenizer=model.tokenizer,
            label_names=splits.label_names,
            max_length=config.data.max_length,
            cache_dir=request.cache_dir,
        )

    train_set = encoded(splits.train)
    if model.method.uses_target_rows:
        target = encode_unlabelled(
            _target_texts(splits, model.method),
            tokenizer=model.tokenizer,
            max_length=config.data.max_length,
            cache_dir=request.cache_dir,
        )
        train_set = domain_mixture(train_set, target)
    target_eval = encoded(splits.target_eval) if splits.target_eval is not None else None
    return _Data(train_set, encoded(splits.eval), target_eval)


def _setup_checkpoint(
    config: SweepConfig,
    request: TrialRequest,
    model: _Model,
    splits: Splits,
    evaluations: EvaluationRecorder,
) -> BestCheckpointCallback:
    """The callback keeping the best evaluation's checkpoint, reporting each evaluation for
    pruning, and stopping early when configured."""
    return BestCheckpointCallback(
        metric=config.search.metric,
        maximize=config.search.direction == "maximize",
        report=request.report,
        write=_checkpoint_writer(config, request, model, splits, evaluations),
        patience=config.train.early_stopping.patience if config.train.early_stopping else None,
        folder=request.checkpoint_dir,
        resource_per_step=_resource_per_step(config),
    )


def _resource_per_step(config: SweepConfig) -> int:
    """What one optimizer step adds to the pruner's resource (``search.pruning.resource``)."""
    if config.search.pruning.resource == "steps":
        return 1
    return config.train.batch_size * config.train.gradient_accumulation_steps


def _setup_trainer(
    config: SweepConfig,
    request: TrialRequest,
    model: _Model,
    data: _Data,
    checkpoint: BestCheckpointCallback,
    evaluations: EvaluationRecorder,
) -> TunefleetTrainer:
    """Trainer with the trial's optimizer and schedule, and the callbacks in the order they need:
    the method's, the checkpoint keeper, the gradient-norm logger, then the caller's (the
    trackers read the grouped norms the logger adds)."""
    train, maximize = config.train, config.search.direction == "maximize"
    steps_per_epoch = math.ceil(
        len(data.train) / (train.batch_size * train.gradient_accumulation_steps)
    )
    gradients = GradientGroups(model.module, model.method)
    trainer = TunefleetTrainer(
        model=model.module,
        args=training_arguments(
            train,
            output_dir=request.work_dir,
            metric=config.search.metric,
            maximize=maximize,
            steps_per_epoch=steps_per_epoch,
        ),
        optimizers=_setup_optimizer(config, model, steps_per_epoch=steps_per_epoch),
        data_collator=DataCollatorWithPadding(model.tokenizer),
        train_dataset=data.train,
        eval_dataset=data.eval,
        processing_class=model.tokenizer,
        compute_metrics=evaluations,
        target_eval=data.target_eval,
        gradient_groups=gradients,
        resumable=Resumable(request.resume_dir, record=checkpoint.export, stop=request.stop),
        callbacks=[
            *model.method.callbacks(train),
            checkpoint,
            GradientNormLogger(gradients),
            *request.callbacks,
        ],
    )
    # The worker prints its own progress; Trainer's printer would interleave raw dicts with it.
    trainer.remove_callback(PrinterCallback)
    return trainer


def _setup_optimizer(
    config: SweepConfig, model: _Model, *, steps_per_epoch: int
) -> tuple[Optimizer, LRScheduler | ReduceLROnPlateau]:
    """AdamW over the method's parameter groups (or the default decay / no-decay split), and
    the learning-rate schedule."""
    train = config.train
    optimizer = build_optimizer(
        model.method.param_groups(model.module, train)
        or default_param_groups(model.module, train.weight_decay),
        train,
    )
    maximize = config.search.direction == "maximize"
    return optimizer, build_scheduler(
        optimizer, train, steps_per_epoch=steps_per_epoch, maximize=maximize
    )


def _outcome(
    config: SweepConfig,
    request: TrialRequest,
    model: _Model,
    splits: Splits,
    checkpoint: BestCheckpointCallback,
    log_history: Sequence[Mapping[str, Any]],
    *,
    started: float,
    score: bool = True,
) -> TrialOutcome:
    """The trained trial's outcome: the best evaluation's metrics, plus the test split scored on
    its reloaded checkpoint (``started``: the trial's ``time.perf_counter()`` at its start;
    ``score``: False for a trial that has not finished)."""
    best = checkpoint.best
    metrics = dict(best.metrics)
    if score and splits.test is not None and best.hashes is not None and not checkpoint.pruned:
        metrics.update(
            score_checkpoint(
                request.checkpoint_dir,
                model.resolved,
                splits,
                config.data.max_length,
                token=model.token,
            )
        )
    # Counted after training: gradual unfreezing ends with more trainable than it starts.
    trainable, total = count_parameters(model.module)
    seconds = time.perf_counter() - started
    return TrialOutcome(
        value=best.value,
        best_epoch=best.epoch,
        metrics={k: v for k, v in metrics.items() if math.isfinite(v)},
        history=[_finite(entry) for entry in log_history],
        checkpoint=request.checkpoint_dir if best.hashes is not None else None,
        checkpoint_sha256=best.hashes,
        seconds=seconds,
        pruned=checkpoint.pruned,
        trainable_parameters=trainable,
        total_parameters=total,
        measured={
            "trainable_params": float(trainable),
            "total_params": float(total),
            "train_seconds": seconds,
        },
    )


def _measure(
    config: SweepConfig, model: _Model, data: _Data, outcome: TrialOutcome
) -> dict[str, float]:
    """What a finished trial adds to its measured figures: its checkpoint's size, and its
    latency when an objective or constraint asks for it (it costs forward passes)."""
    measured: dict[str, float] = {}
    if outcome.checkpoint is not None:
        measured["checkpoint_mb"] = folder_mb(outcome.checkpoint)
    if "latency_ms" in wanted_measures(config):
        settings = config.search.latency
        batch = fixed_batch(
            data.eval, DataCollatorWithPadding(model.tokenizer), settings.batch_size
        )
        measured["latency_ms"] = latency_ms(model.module, batch, settings)
    return measured


def wanted_measures(config: SweepConfig) -> set[str]:
    """The measured figures an objective or a constraint names."""
    search = config.search
    names = {o.metric for o in search.all_objectives}
    names.update(parse_constraint(rule).metric for rule in search.constraints)
    return names


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
    model: _Model,
    splits: Splits,
    evaluations: EvaluationRecorder,
) -> Callable[[nn.Module, float, float], dict[str, str]]:
    def write(module: nn.Module, value: float, epoch: float) -> dict[str, str]:
        manifest = Manifest(
            method=model.method.name,
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
            model=module,
            save=model.method.save,
            tokenizer=model.tokenizer,
            manifest=manifest,
            evaluation=evaluations.report,  # written during the evaluation that chose it
        )

    return write
