"""Scoring: the metrics of each evaluation during training (with the report kept alongside a
checkpoint), and the test split scored on the reloaded best checkpoint."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from transformers import EvalPrediction

from tunefleet.trainers.checkpoint import load_checkpoint
from tunefleet.trainers.data import Splits
from tunefleet.trainers.metrics import classification_metrics, cross_entropy, evaluation_report
from tunefleet.trainers.predict import batched_logits


def compute_metrics(prediction: EvalPrediction) -> dict[str, float]:
    return classification_metrics(*_logits_and_labels(prediction))


class EvaluationRecorder:
    """A trial's ``compute_metrics``: the same metrics, plus the full ``evaluation_report`` of the
    latest evaluation kept as ``report``, for the checkpoint written at that evaluation.

    One per trial (it knows the label names), so no report outlives or leaks across trials.
    """

    def __init__(self, label_names: Sequence[str]) -> None:
        self.label_names = tuple(label_names)
        self.report: dict[str, Any] | None = None
        self._paused = False

    def __call__(self, prediction: EvalPrediction) -> dict[str, float]:
        logits, labels = _logits_and_labels(prediction)
        if not self._paused:
            self.report = evaluation_report(logits, labels, self.label_names)
        return classification_metrics(logits, labels)

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Evaluations inside are scored as usual but leave ``report`` as it was."""
        self._paused = True
        try:
            yield
        finally:
            self._paused = False


def _logits_and_labels(
    prediction: EvalPrediction,
) -> tuple[NDArray[np.floating], NDArray[np.integer]]:
    logits = (
        prediction.predictions[0]
        if isinstance(prediction.predictions, tuple)
        else prediction.predictions
    )
    return np.asarray(logits), np.asarray(prediction.label_ids)


def score_checkpoint(
    folder: Path,
    resolved: str,
    splits: Splits,
    max_length: int,
    *,
    token: str | None = None,
) -> dict[str, float]:
    """Test-set metrics of the saved best checkpoint (reloaded, so the file itself is tested)."""
    assert splits.test is not None
    model, tokenizer, _ = load_checkpoint(folder, base_model=resolved, token=token)
    logits = batched_logits(model, tokenizer, splits.test.texts, max_length=max_length)
    index = {name: i for i, name in enumerate(splits.label_names)}
    labels = np.array([index[label] for label in splits.test.labels])
    scores = classification_metrics(logits, labels)
    return {
        "test_accuracy": scores["accuracy"],
        "test_f1": scores["f1"],
        "test_loss": cross_entropy(logits, labels),
    }
