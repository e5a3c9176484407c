"""Training strategies on the one path: schedules, early stopping, accumulation, precision,
gradient checkpointing."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from support.trials import tiny_config, trial_request
from tunefleet.config import SweepConfig, TrainConfig
from tunefleet.errors import ConfigError
from tunefleet.trainers.arguments import check_precision
from tunefleet.trainers.callbacks import BestCheckpointCallback
from tunefleet.trainers.optimization import build_optimizer, build_scheduler, warm_restarts
from tunefleet.trainers.run import run_trial


def tiny(model: Path, data: Path, **train: Any) -> SweepConfig:
    settings = {"method": "full", "epochs": 2, "learning_rate": 1e-3, "logging_steps": 1, **train}
    return tiny_config(model, data, **settings)


request = trial_request


def lrs(train: TrainConfig, steps: int, steps_per_epoch: int) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = build_optimizer([{"params": [param]}], train)
    scheduler = build_scheduler(optimizer, train, steps_per_epoch=steps_per_epoch, maximize=True)
    out = []
    for _ in range(steps):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def test_warm_restarts_cycles_grow_by_t_mult() -> None:
    train = TrainConfig(
        scheduler="cosine_with_restarts",
        epochs=7,
        learning_rate=0.1,
        restarts={"t0_epochs": 1, "t_mult": 2},
    )
    values = lrs(train, 70, steps_per_epoch=10)
    restarts = [step for step in range(1, 70) if values[step] > values[step - 1] + 1e-9]
    assert restarts == [10, 30]  # cycles of 10, 20, then 40 steps
    assert values[0] == pytest.approx(0.1) and values[10] == pytest.approx(0.1)
    assert values[5] == pytest.approx(0.05)  # half-way down the first cosine
    assert warm_restarts(4, 10, 1.0)(1) == pytest.approx(0.5)  # linear warmup first


@pytest.mark.parametrize("name", ["linear", "cosine", "constant"])
def test_warmup_reaches_the_peak_then_follows_the_schedule(name: str) -> None:
    train = TrainConfig(scheduler=name, epochs=1, learning_rate=0.1, warmup_ratio=0.2)
    values = lrs(train, 50, steps_per_epoch=50)
    assert values[0] == 0.0 and max(values) == pytest.approx(0.1)
    assert values.index(max(values)) == 10
    tail = values[11:]
    if name == "constant":
        assert all(v == pytest.approx(0.1) for v in tail)
    else:
        assert all(a >= b for a, b in itertools.pairwise(tail)) and tail[-1] < 0.01


def test_reduce_on_plateau_halves_the_rate_after_an_evaluation_without_improvement(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    # A rate this small moves no prediction, so the objective is flat: a plateau at every
    # evaluation after the first (which improves on nothing), with patience 0 each halves the
    # rate. (Below 2e-8 a halving would be under ReduceLROnPlateau's eps and skipped.)
    peak = 1e-7
    config = tiny(
        tiny_model, sentiment_csv, scheduler="reduce_on_plateau", epochs=4, learning_rate=peak
    )
    history = run_trial(config, request(tmp_path)).history
    accuracies = [h["eval_accuracy"] for h in history if "eval_accuracy" in h]
    assert len(accuracies) == 4 and len(set(accuracies)) == 1, accuracies  # the plateau
    steps_per_epoch = math.ceil(128 / 16)
    logged = {h["step"]: h["learning_rate"] for h in history if "learning_rate" in h}
    assert sorted(logged) == list(range(1, 4 * steps_per_epoch + 1))
    # Evaluation k ends epoch k; epoch k + 1 trains at the rate it left.
    expected = {1: peak, 2: peak, 3: peak / 2, 4: peak / 4}
    for step, lr in logged.items():
        epoch = math.ceil(step / steps_per_epoch)
        assert lr == pytest.approx(expected[epoch], rel=1e-6), (step, lr, expected[epoch])


def test_early_stopping_counts_evaluations_without_improvement() -> None:
    callback = BestCheckpointCallback(
        metric="eval_m", maximize=True, write=lambda *a: {}, report=None, patience=2
    )
    args, state, control = (
        TrainingArguments("unused", report_to=[]),
        TrainerState(),
        TrainerControl(),
    )
    stopped = []
    for epoch, value in enumerate([0.5, 0.6, 0.6, 0.55, 0.7], start=1):
        state.epoch = float(epoch)
        callback.on_evaluate(args, state, control, metrics={"eval_m": value}, model=None)
        stopped.append(control.should_training_stop)
    assert stopped == [False, False, False, True, True]


def test_early_stopping_ends_a_real_trial(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    # lr 0 cannot improve on the first evaluation, so patience 1 stops after the second.
    config = tiny(
        tiny_model, sentiment_csv, epochs=6, learning_rate=1e-12, early_stopping={"patience": 1}
    )
    outcome = run_trial(config, request(tmp_path))
    assert [h["epoch"] for h in outcome.history if "eval_accuracy" in h] == [1.0, 2.0]


def test_gradient_accumulation_takes_fewer_optimizer_steps(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    plain = run_trial(tiny(tiny_model, sentiment_csv, epochs=1), request(tmp_path / "a"))
    accumulated = run_trial(
        tiny(tiny_model, sentiment_csv, epochs=1, gradient_accumulation_steps=2),
        request(tmp_path / "b"),
    )
    last = [h["step"] for h in plain.history][-1]
    last_accumulated = [h["step"] for h in accumulated.history][-1]
    assert last == math.ceil(128 / 16) and last_accumulated == math.ceil(128 / 32)


def test_precision_the_device_cannot_run_is_refused_by_name(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    if torch.cuda.is_available():
        check_precision("fp16")  # a GPU runs fp16: nothing to refuse
        return
    with pytest.raises(ConfigError, match=r"train\.precision: fp16 needs a CUDA GPU"):
        run_trial(tiny(tiny_model, sentiment_csv, precision="fp16"), request(tmp_path))


class Records(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_step_end(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: Any = None,
        **kwargs: Any,
    ) -> None:
        self.seen.append(model)


@pytest.mark.parametrize(("method", "precision"), [("full", "bf16"), ("lora", "fp32")])
def test_gradient_checkpointing_and_bf16_train(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, method: str, precision: str
) -> None:
    records = Records()
    config = tiny(
        tiny_model,
        sentiment_csv,
        method=method,
        epochs=1,
        precision=precision,
        gradient_checkpointing=True,
    )
    outcome = run_trial(config, request(tmp_path, callbacks=[records]))
    inner = records.seen[0].get_base_model() if method == "lora" else records.seen[0]
    assert inner.is_activation_checkpointing
    losses = [h["loss"] for h in outcome.history if "loss" in h]
    assert losses and all(math.isfinite(v) for v in losses)
