"""The full report of an evaluation: numbers checked by hand and against the logged metrics, and
the best checkpoint carrying the report of the (source) evaluation that chose it."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from support import trials
from tunefleet.trainers.checkpoint import EVALUATION, hash_folder, verify
from tunefleet.trainers.data import load_splits
from tunefleet.trainers.evaluation import EvaluationRecorder
from tunefleet.trainers.metrics import classification_metrics, evaluation_report
from tunefleet.trainers.run import run_trial

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "sentiment-all-domains.csv"


def one_hot(predicted: list[int], classes: int) -> np.ndarray:
    return np.eye(classes)[predicted]


def test_report_of_a_hand_checked_case() -> None:
    # true:      a a a b b c
    # predicted: a a b b a a   -> c is never predicted right, and never predicted at all
    labels = np.array([0, 0, 0, 1, 1, 2])
    report = evaluation_report(one_hot([0, 0, 1, 1, 0, 0], 3), labels, ["a", "b", "c"])
    assert report == {
        "labels": ["a", "b", "c"],
        "confusion_matrix": [[2, 1, 0], [1, 1, 0], [1, 0, 0]],
        "precision": [0.5, 0.5, 0.0],
        "recall": [pytest.approx(2 / 3), 0.5, 0.0],
        "f1": [pytest.approx(4 / 7), 0.5, 0.0],
        "support": [3, 2, 1],
        "accuracy": 0.5,
        "macro_f1": pytest.approx((4 / 7 + 0.5 + 0.0) / 3),
        "count": 6,
    }
    assert json.loads(json.dumps(report)) == report  # plain JSON types only
    assert all(type(c) is int for row in report["confusion_matrix"] for c in row)


def test_report_agrees_with_the_logged_metrics() -> None:
    rng = np.random.default_rng(0)
    for classes, rows in ((2, 50), (4, 97), (5, 7)):
        logits, labels = rng.normal(size=(rows, classes)), rng.integers(0, classes, rows)
        report = evaluation_report(logits, labels, [f"l{i}" for i in range(classes)])
        metrics = classification_metrics(logits, labels)
        assert report["accuracy"] == pytest.approx(metrics["accuracy"])
        assert report["macro_f1"] == pytest.approx(metrics["f1"])
        assert report["count"] == rows == sum(report["support"])
        assert (
            np.sum(report["confusion_matrix"], axis=0).tolist()
            == np.bincount(logits.argmax(-1), minlength=classes).tolist()
        )
    # A class absent from labels and predictions alike is left out of the macro average.
    logits, labels = one_hot([0, 1, 1], 3), np.array([0, 1, 0])
    report = evaluation_report(logits, labels, ["x", "y", "z"])
    assert report["macro_f1"] == pytest.approx(classification_metrics(logits, labels)["f1"])
    assert report["f1"][2] == 0.0 and report["support"][2] == 0


def test_label_names_must_match_the_logits() -> None:
    with pytest.raises(ValueError, match="3 logits per row for 2 label names"):
        evaluation_report(np.zeros((1, 3)), np.array([0]), ["a", "b"])


def test_recorder_keeps_the_last_report_except_while_paused() -> None:
    from transformers import EvalPrediction

    recorder = EvaluationRecorder(["a", "b"])
    first = EvalPrediction(predictions=one_hot([0, 1], 2), label_ids=np.array([0, 1]))
    second = EvalPrediction(predictions=(one_hot([0, 0], 2),), label_ids=np.array([0, 1]))
    assert recorder(first) == {"accuracy": 1.0, "f1": 1.0}
    with recorder.paused():
        assert recorder(second)["accuracy"] == 0.5
    assert recorder.report is not None and recorder.report["accuracy"] == 1.0
    recorder(second)
    assert recorder.report["accuracy"] == 0.5


class BestSeen(TrainerCallback):
    """What a callback after BestCheckpointCallback sees at each evaluation: Trainer's best
    fields and the report in the best checkpoint folder."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, float | None, int | None, dict[str, object] | None]] = []

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: object
    ) -> None:
        folder = state.best_model_checkpoint
        report = json.loads((Path(folder) / EVALUATION).read_text()) if folder else None
        self.seen.append((state.global_step, state.best_metric, state.best_global_step, report))


def test_best_checkpoint_carries_its_evaluation_report(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    seen = BestSeen()
    config = trials.tiny_config(
        tiny_model, sentiment_csv, epochs=3, learning_rate=3e-3, logging_steps=2
    )
    outcome = run_trial(config, trials.trial_request(tmp_path, callbacks=[seen]))
    folder = tmp_path / "ckpt"
    report = json.loads((folder / EVALUATION).read_text())
    assert report["accuracy"] == pytest.approx(outcome.metrics["eval_accuracy"])
    assert report["accuracy"] == pytest.approx(outcome.value)
    assert report["macro_f1"] == pytest.approx(outcome.metrics["eval_f1"])
    assert report["labels"] == ["0", "1"]
    assert report["count"] == len(load_splits(config.data).eval.labels)
    assert outcome.checkpoint_sha256 is not None and EVALUATION in outcome.checkpoint_sha256
    assert outcome.checkpoint_sha256 == hash_folder(folder)
    verify(folder, outcome.checkpoint_sha256)

    evaluations = [h for h in outcome.history if "eval_accuracy" in h]
    assert len(seen.seen) == len(evaluations) == 3
    best = max(h["eval_accuracy"] for h in evaluations)
    for (step, best_metric, best_step, seen_report), entry in zip(
        seen.seen, evaluations, strict=True
    ):
        assert step == entry["step"] and best_metric is not None and best_step is not None
        assert seen_report is not None
        if best_step == step:  # this evaluation is a new best: the folder holds its report
            assert best_metric == entry["eval_accuracy"]
            assert seen_report["accuracy"] == pytest.approx(entry["eval_accuracy"])
    assert seen.seen[-1][1] == best == outcome.value


@pytest.fixture(scope="module")
def uneven_domains_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """yelp (source) twice the size of imdb (target), so the two evaluations differ in count."""
    with EXAMPLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    picked = [
        row
        for domain, count in (("yelp", 40), ("imdb", 20))
        for label in ("0", "1")
        for row in [r for r in rows if r["domain"] == domain and r["label"] == label][:count]
    ]
    path = tmp_path_factory.mktemp("uneven") / "domains.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "domain"])
        writer.writeheader()
        writer.writerows(picked)
    return path


def test_with_a_target_domain_the_report_is_the_source_evaluations(
    tmp_path: Path, tiny_model: Path, uneven_domains_csv: Path
) -> None:
    config = trials.tiny_config(
        tiny_model,
        uneven_domains_csv,
        data_options={
            "domain_column": "domain",
            "source_domains": ["yelp"],
            "target_domains": ["imdb"],
        },
        epochs=2,
        learning_rate=3e-3,
    )
    splits = load_splits(config.data)
    assert splits.target_eval is not None
    source_rows, target_rows = len(splits.eval.labels), len(splits.target_eval.labels)
    assert source_rows != target_rows
    outcome = run_trial(config, trials.trial_request(tmp_path))
    report = json.loads((tmp_path / "ckpt" / EVALUATION).read_text())
    assert report["count"] == source_rows
    assert report["accuracy"] == pytest.approx(outcome.metrics["eval_accuracy"])
    assert report["macro_f1"] == pytest.approx(outcome.metrics["eval_f1"])
    assert "eval_target_accuracy" in outcome.metrics
    verify(tmp_path / "ckpt", outcome.checkpoint_sha256 or {})
