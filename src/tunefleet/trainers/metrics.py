"""Classification metrics: accuracy and macro-F1 (imbalanced data needs both)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def classification_metrics(
    logits: NDArray[np.floating], labels: NDArray[np.integer]
) -> dict[str, float]:
    predicted = logits.argmax(axis=-1)
    classes = np.union1d(np.unique(labels), np.arange(logits.shape[-1]))
    f1s = []
    for c in classes:
        tp = float(np.sum((predicted == c) & (labels == c)))
        fp = float(np.sum((predicted == c) & (labels != c)))
        fn = float(np.sum((predicted != c) & (labels == c)))
        if tp + fp + fn == 0:
            continue  # a class absent from both labels and predictions says nothing
        f1s.append(2 * tp / (2 * tp + fp + fn))
    return {
        "accuracy": float(np.mean(predicted == labels)),
        "f1": float(np.mean(f1s)) if f1s else 0.0,
    }


def cross_entropy(logits: NDArray[np.floating], labels: NDArray[np.integer]) -> float:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())
