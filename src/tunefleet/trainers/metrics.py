"""Classification metrics: accuracy and macro-F1 (imbalanced data needs both), and the full
report of one evaluation (confusion matrix, per-class scores) kept with its checkpoint."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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


def evaluation_report(
    logits: NDArray[np.floating], labels: NDArray[np.integer], label_names: Sequence[str]
) -> dict[str, Any]:
    """One evaluation in full, as JSON-able plain types: the confusion matrix (rows: true label,
    columns: predicted) and per-class precision, recall, f1 and support, aligned with ``labels``.

    ``macro_f1`` averages the classes that occur in the labels or the predictions, as
    ``classification_metrics``' ``f1`` does, so the report and the logged metric agree.
    """
    n = len(label_names)
    if logits.shape[-1] != n:
        raise ValueError(f"{logits.shape[-1]} logits per row for {n} label names")
    predicted = logits.argmax(axis=-1).astype(np.int64)
    truth = np.asarray(labels, dtype=np.int64)
    matrix = np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)
    tp = np.diag(matrix).astype(np.float64)
    support, predictions = matrix.sum(axis=1), matrix.sum(axis=0)
    fp, fn = predictions - tp, support - tp
    f1 = _ratio(2 * tp, 2 * tp + fp + fn)
    present = (tp + fp + fn) > 0
    count = int(matrix.sum())
    return {
        "labels": list(label_names),
        "confusion_matrix": matrix.tolist(),
        "precision": _ratio(tp, tp + fp).tolist(),
        "recall": _ratio(tp, tp + fn).tolist(),
        "f1": f1.tolist(),
        "support": support.tolist(),
        "accuracy": float(tp.sum() / count) if count else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "count": count,
    }


def _ratio(numerator: NDArray[np.floating], denominator: NDArray[np.floating]) -> NDArray[Any]:
    """Elementwise quotient, 0 where the denominator is (a class never predicted or seen)."""
    safe = np.where(denominator > 0, denominator, 1.0)
    return np.where(denominator > 0, numerator / safe, 0.0)
