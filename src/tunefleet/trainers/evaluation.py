"""Scoring during training: the metrics of each evaluation, the held-out target domain folded
into the same evaluation, and the test split scored on the reloaded best checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import DataLoader, Dataset
from transformers import EvalPrediction, PreTrainedModel, Trainer
from transformers.trainer_utils import EvalLoopOutput

from tunefleet.trainers.data import Splits
from tunefleet.trainers.methods import Method
from tunefleet.trainers.metrics import classification_metrics, cross_entropy
from tunefleet.trainers.model import load_classifier, load_tokenizer
from tunefleet.trainers.predict import batched_logits

TARGET_PREFIX = "eval_target"
TARGET_METRICS = ("accuracy", "f1")
"""Scored on the held-out target-domain rows at every evaluation, as ``eval_target_<name>``."""


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
