"""Scoring a model on a frozen test set: accuracy, macro-F1, per-class recall, p95 latency per
batch and size; what the promotion gate (``platform.gate``) compares.

Only :func:`score_predictor` imports torch (through the predictor it is given); :class:`Scores`
and :func:`scores_of` are plain Python so the gate can be checked without a model.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tunefleet.trainers.data import Table
    from tunefleet.trainers.predict import Predictor

MIN_TIMED_BATCHES = 20
"""With a latency budget to check, the test set is run again until at least this many batches
were timed, so a small test set still gives a p95 of more than one or two figures."""


@dataclass(frozen=True)
class Scores:
    """One model on one test set. ``recall`` has one entry per class of the test set."""

    rows: int
    accuracy: float
    f1_macro: float
    recall: dict[str, float]
    p95_latency_ms: float
    model_mb: float

    def metric(self, name: str) -> float:
        if name == "accuracy":
            return self.accuracy
        if name == "f1_macro":
            return self.f1_macro
        raise ValueError(f"unknown promotion metric {name!r}: accuracy or f1_macro")

    def summary(self) -> str:
        recall = ", ".join(f"{label} {value:.3f}" for label, value in self.recall.items())
        return (
            f"accuracy {self.accuracy:.4f}, f1_macro {self.f1_macro:.4f}, recall [{recall}], "
            f"p95 {self.p95_latency_ms:.1f} ms/batch, {self.model_mb:.2f} MB ({self.rows} rows)"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "accuracy": self.accuracy,
            "f1_macro": self.f1_macro,
            "recall": dict(self.recall),
            "p95_latency_ms": self.p95_latency_ms,
            "model_mb": self.model_mb,
        }


def scores_of(
    truth: Sequence[str],
    predicted: Sequence[str],
    *,
    p95_latency_ms: float,
    model_mb: float,
) -> Scores:
    """Accuracy, macro-F1 (over the classes that occur in ``truth`` or ``predicted``) and the
    recall of each class of ``truth``, in sorted order."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    if not truth:
        raise ValueError("an empty test set cannot be scored")
    pairs = list(zip(truth, predicted, strict=True))
    correct = sum(t == p for t, p in pairs)
    classes = sorted(set(truth) | set(predicted))
    f1 = [_f1(pairs, label) for label in classes]
    recall = {label: _recall(pairs, label) for label in sorted(set(truth))}
    return Scores(
        rows=len(pairs),
        accuracy=correct / len(pairs),
        f1_macro=sum(f1) / len(f1),
        recall=recall,
        p95_latency_ms=p95_latency_ms,
        model_mb=model_mb,
    )


def _recall(pairs: list[tuple[str, str]], label: str) -> float:
    support = sum(t == label for t, _ in pairs)
    hits = sum(t == label and p == label for t, p in pairs)
    return hits / support if support else 0.0


def _f1(pairs: list[tuple[str, str]], label: str) -> float:
    hits = sum(t == label and p == label for t, p in pairs)
    predicted = sum(p == label for _, p in pairs)
    actual = sum(t == label for t, _ in pairs)
    if hits == 0:
        return 0.0
    precision, recall = hits / predicted, hits / actual
    return 2 * precision * recall / (precision + recall)


def score_predictor(
    predictor: Predictor,
    table: Table,
    *,
    batch_size: int,
    model_mb: float,
    min_timed_batches: int = 1,
) -> Scores:
    """Run ``predictor`` on ``table`` in batches of ``batch_size``, each batch timed end to end
    (tokenising to logits on the host), after one untimed warm-up batch; the whole table again
    (timed only) until ``min_timed_batches`` batches were timed."""
    from tunefleet.trainers.predict import batched_logits

    texts = list(table.texts)
    batches = [texts[i : i + batch_size] for i in range(0, len(texts), batch_size)]
    if not batches:
        raise ValueError("an empty test set cannot be scored")

    def run(batch: list[str]) -> Any:
        return batched_logits(
            predictor.model,
            predictor.tokenizer,
            batch,
            max_length=predictor.manifest.max_length,
            batch_size=batch_size,
        )

    predictor.model.eval()
    run(batches[0])  # warm-up: first-call allocations and lazy initialisation
    names = predictor.label_names
    predicted: list[str] = []
    timings: list[float] = []
    passes = max(1, math.ceil(min_timed_batches / len(batches)))
    for number in range(passes):
        for batch in batches:
            start = time.perf_counter()
            logits = run(batch)
            timings.append((time.perf_counter() - start) * 1000)
            if number == 0:
                predicted.extend(names[int(row.argmax())] for row in logits)
    return scores_of(table.labels, predicted, p95_latency_ms=_p95(timings), model_mb=model_mb)


def _p95(timings: list[float]) -> float:
    """The nearest-rank 95th percentile: a figure that was measured, not an interpolation."""
    ordered = sorted(timings)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
