"""The one training path on a tiny real model: best-not-last, pruning, self-describing
checkpoints that reload to the same predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import torch

from support import trials
from tunefleet.config import SweepConfig
from tunefleet.errors import CheckpointError
from tunefleet.trainers.callbacks import BestCheckpointCallback
from tunefleet.trainers.checkpoint import MANIFEST, Manifest, hash_folder, verify
from tunefleet.trainers.run import TrialPruned, TrialRequest, run_trial

if TYPE_CHECKING:
    from transformers import TrainerControl


def tiny_config(model: Path, data: Path, **train: Any) -> SweepConfig:
    settings = {"epochs": 3, "learning_rate": 3e-3, "logging_steps": 2, **train}
    return trials.tiny_config(model, data, data_options={"test_fraction": 0.2}, **settings)


def request(tmp_path: Path, **kwargs: Any) -> TrialRequest:
    return trials.trial_request(tmp_path, params={"train.learning_rate": 3e-3}, **kwargs)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_trial_keeps_its_best_evaluation_and_checkpoint(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, method: str
) -> None:
    from tunefleet.trainers.predict import Predictor

    reported: list[tuple[int, float]] = []
    outcome = run_trial(
        tiny_config(tiny_model, sentiment_csv, method=method),
        request(tmp_path, report=lambda e, v: reported.append((e, v)) or False),
    )
    evaluations = [h for h in outcome.history if "eval_accuracy" in h]
    # Reported at each evaluation's global step, the end of each epoch here.
    assert [s for s, _ in reported] == [h["step"] for h in evaluations]
    assert [h["epoch"] for h in evaluations] == [1.0, 2.0, 3.0]
    assert [v for _, v in reported] == [h["eval_accuracy"] for h in evaluations]
    assert outcome.value == max(v for _, v in reported)
    manifest = Manifest.read(tmp_path / "ckpt")
    # the first epoch reaching it
    best_epoch = next(h["epoch"] for h in evaluations if h["eval_accuracy"] == outcome.value)
    assert (manifest.value, manifest.epoch, manifest.method) == (outcome.value, best_epoch, method)
    assert manifest.label_names == ("0", "1") and manifest.params == {"train.learning_rate": 3e-3}
    assert any("loss" in h and "learning_rate" in h and "grad_norm" in h for h in outcome.history)
    files = set(outcome.checkpoint_sha256 or {})
    weights = "model.safetensors" if method == "full" else "adapter_model.safetensors"
    assert {MANIFEST, weights, "tokenizer.json", "tokenizer_config.json"} <= files
    assert outcome.checkpoint_sha256 == hash_folder(tmp_path / "ckpt")
    assert {"test_accuracy", "test_f1", "test_loss"} <= set(outcome.metrics)
    if method == "lora":
        assert outcome.trainable_parameters < outcome.total_parameters / 2
        assert not any(name.endswith("model.safetensors") and name != weights for name in files)
    predictor = Predictor.from_checkpoint(tmp_path / "ckpt")
    again = Predictor.from_checkpoint(tmp_path / "ckpt")
    texts = ["the food was wonderful", "never again, awful"]
    assert torch.equal(
        torch.from_numpy(predictor.logits(texts)), torch.from_numpy(again.logits(texts))
    )
    assert {p.label for p in predictor.predict(texts)} <= {"0", "1"}


def test_pruning_stops_training_and_says_so(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    with pytest.raises(TrialPruned) as info:
        run_trial(
            tiny_config(tiny_model, sentiment_csv, method="full"),
            request(tmp_path, report=lambda e, v: True),
        )
    outcome = info.value.outcome
    assert outcome.pruned
    assert [h["epoch"] for h in outcome.history if "eval_accuracy" in h] == [1.0]
    assert "test_accuracy" not in outcome.metrics


def evaluate_epochs(
    callback: BestCheckpointCallback,
    values: list[float],
    *,
    steps_per_epoch: int = 0,
    epochs: int = 0,
) -> TrainerControl:
    """Hand ``callback`` one evaluation per value, at the end of epochs 1, 2, ... of a run of
    ``epochs`` epochs; returns Trainer's control after the last."""
    from transformers import TrainerControl, TrainerState, TrainingArguments

    state, control = TrainerState(max_steps=steps_per_epoch * epochs), TrainerControl()
    for epoch, value in enumerate(values, start=1):
        state.epoch, state.global_step = float(epoch), steps_per_epoch * epoch
        callback.on_evaluate(
            TrainingArguments("unused", report_to=[]),
            state,
            control,
            metrics={"eval_m": value},
            model=None,
        )
    return control


def test_best_checkpoint_callback_writes_only_on_improvement() -> None:
    writes: list[float] = []

    def write(model: Any, value: float, epoch: float) -> dict[str, str]:
        writes.append(epoch)
        return {"f": str(value)}

    for maximize, values, expected_writes, best in (
        (True, [0.5, 0.8, 0.6], [1.0, 2.0], 0.8),
        (False, [0.5, 0.8, 0.4], [1.0, 3.0], 0.4),
        (True, [float("nan"), 0.3, 0.3], [2.0], 0.3),
    ):
        writes.clear()
        callback = BestCheckpointCallback(
            metric="eval_m", maximize=maximize, write=write, report=None
        )
        evaluate_epochs(callback, values)
        assert writes == expected_writes and callback.best.value == best


def test_the_final_evaluation_is_never_pruned() -> None:
    """Pruning at a trial's last evaluation saves nothing and throws its result away: the last
    step of training, or early stopping ending training at this evaluation, makes it final."""
    # Three epochs of 4 steps; the reporter asks to prune at the last epoch given.
    for values, patience, pruned in (
        ([0.5], None, True),  # epoch 1 of 3: pruned
        ([0.5, 0.6, 0.7], None, False),  # epoch 3 of 3: the final evaluation
        ([0.8, 0.5], 1, False),  # early stopping ends training at epoch 2
        ([0.8, 0.5], 2, True),  # patience left: training would go on, so it is pruned
    ):
        asked: list[int] = []

        def report(
            step: int, value: float, asked: list[int] = asked, last: int = len(values)
        ) -> bool:
            asked.append(step)
            return step == 4 * last

        callback = BestCheckpointCallback(
            metric="eval_m",
            maximize=True,
            write=lambda *a: {"f": "h"},
            report=report,
            patience=patience,
        )
        control = evaluate_epochs(callback, values, steps_per_epoch=4, epochs=3)
        # every evaluation is reported, at its global step
        assert asked == [4 * epoch for epoch in range(1, len(values) + 1)]
        assert callback.pruned is pruned, values
        assert control.should_training_stop is (pruned or patience == 1)
        assert callback.best.hashes == {"f": "h"}  # the best checkpoint's hashes are kept


def test_missing_metric_is_named(tmp_path: Path) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    callback = BestCheckpointCallback(
        metric="eval_auc", maximize=True, write=lambda *a: {}, report=None
    )
    with pytest.raises(KeyError, match=r"eval_auc.*eval_accuracy"):
        callback.on_evaluate(
            TrainingArguments("unused", report_to=[]),
            TrainerState(),
            TrainerControl(),
            metrics={"eval_accuracy": 1.0},
        )


def test_verify_names_changed_missing_and_extra_files(tmp_path: Path) -> None:
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")
    hashes = hash_folder(folder)
    verify(folder, hashes)
    (folder / "a.txt").write_text("tampered")
    (folder / "b.txt").unlink()
    (folder / "c.txt").write_text("c")
    with pytest.raises(CheckpointError) as info:
        verify(folder, hashes)
    assert all(s in str(info.value) for s in ("changed a.txt", "missing b.txt", "unexpected c.txt"))
    assert json.loads(json.dumps(hashes)) == hashes
