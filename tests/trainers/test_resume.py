"""Trials that survive their workers, on a tiny real BERT and real sentences: a trial killed or
stopped after its state was written resumes to the same result as one never interrupted, for
every kind of method; the state is swapped in atomically; diverging and out-of-memory trials end
at the step with what they were."""

from __future__ import annotations

import csv
import dataclasses
import random
import shutil
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from support import trials
from tunefleet.config import SweepConfig
from tunefleet.platform.layout import Layout
from tunefleet.trainers.checkpoint import hash_folder
from tunefleet.trainers.methods.dann import DomainAdversarial
from tunefleet.trainers.resume import (
    MARKER,
    NonFiniteError,
    TrialInterrupted,
    TrialOutOfMemory,
    has_resumable,
    recover,
    resumable_step,
    write_state,
)
from tunefleet.trainers.run import TrialOutcome, TrialRequest, run_trial
from tunefleet.trainers.trainer import MODEL_STATE

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "data" / "sentiment-all-domains.csv"
TIMING = ("runtime", "per_second")
STEPS_PER_EPOCH = 7
"""112 training rows (160 less the eval and test fifths, rounded) in batches of 16."""


class Killed(Exception):
    """Stands for the worker's death: nothing after it runs."""


class Recorder(TrainerCallback):
    """At each optimizer step: which parameters train, and dann's lambda."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[int, float | None]] = {}

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        model = kw["model"]
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        lambda_ = model.lambda_ if isinstance(model, DomainAdversarial) else None
        self.steps[state.global_step] = (trainable, lambda_)


class KillAfterFirstEvaluation(TrainerCallback):
    """Dies at the next epoch's start: its evaluation and the resumable state are written."""

    def on_epoch_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step > 0:
            raise Killed


class AtStep(TrainerCallback):
    """Runs ``action(model)`` at the end of optimizer step ``step``."""

    def __init__(self, step: int, action: Any) -> None:
        self.step, self.action = step, action

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == self.step:
            self.action(kw["model"])


@pytest.fixture(scope="module")
def domain_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 rows per (domain, label) of yelp (source) and imdb (target)."""
    with EXAMPLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    picked = [
        row
        for domain in ("yelp", "imdb")
        for label in ("0", "1")
        for row in [r for r in rows if r["domain"] == domain and r["label"] == label][:40]
    ]
    random.Random(1).shuffle(picked)
    path = tmp_path_factory.mktemp("domains") / "domains.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "domain"])
        writer.writeheader()
        writer.writerows(picked)
    return path


def config(model: Path, data: Path, method: str, **train: Any) -> SweepConfig:
    settings: dict[str, Any] = {"epochs": 3, "learning_rate": 3e-3, "logging_steps": 2}
    options: dict[str, Any] = {"test_fraction": 0.2}
    if method == "dann":
        options = {
            "domain_column": "domain",
            "source_domains": ["yelp"],
            "target_domains": ["imdb"],
        }
        settings["dann"] = {"lambda": 0.7, "schedule": "ganin", "hidden": 16}
    if method == "unfreeze":
        settings["unfreeze"] = {"every_epochs": 1, "blocks_per_step": 1}
    return trials.tiny_config(
        model, data, data_options=options, method=method, **{**settings, **train}
    )


def request(folder: Path, **kwargs: Any) -> TrialRequest:
    return trials.trial_request(
        folder, params={"train.learning_rate": 3e-3}, resume_dir=folder / "resume", **kwargs
    )


def evaluations(outcome: TrialOutcome) -> list[dict[str, Any]]:
    return [entry for entry in outcome.history if "eval_accuracy" in entry]


class KillAfterEvaluation(TrainerCallback):
    """Dies at the step after the evaluation at ``step`` (its resumable state written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if state.global_step == self.step:
            raise Killed


def assert_same_result(
    resumed: TrialOutcome,
    uninterrupted: TrialOutcome,
    folders: tuple[Path, Path],
    epochs: list[float] | None = None,
) -> None:
    """Same evaluations (exact accuracy, loss within 1e-5) at ``epochs`` (default: each
    epoch's end), same best and test scores, and the same trained weights at the end (the tiny
    model's losses move little; its weights do)."""
    got, want = evaluations(resumed), evaluations(uninterrupted)
    expected = [1.0, 2.0, 3.0] if epochs is None else epochs
    assert [e["epoch"] for e in got] == [e["epoch"] for e in want] == expected
    for mine, theirs in zip(got, want, strict=True):
        assert mine["eval_accuracy"] == theirs["eval_accuracy"]
        assert mine["eval_loss"] == pytest.approx(theirs["eval_loss"], abs=1e-5)
    assert (resumed.value, resumed.best_epoch) == (uninterrupted.value, uninterrupted.best_epoch)
    for name, value in uninterrupted.metrics.items():
        if not any(timing in name for timing in TIMING):
            assert resumed.metrics[name] == pytest.approx(value, abs=1e-5), name
    final = [torch.load(folder / "resume" / MODEL_STATE, weights_only=True) for folder in folders]
    assert final[0].keys() == final[1].keys()
    for name, tensor in final[0].items():
        assert torch.allclose(tensor, final[1][name], rtol=0, atol=1e-6), name


def baseline(cfg: SweepConfig, tmp_path: Path, **kwargs: Any) -> tuple[TrialOutcome, Recorder]:
    recorder = Recorder()
    outcome = run_trial(cfg, request(tmp_path / "uninterrupted", callbacks=[recorder], **kwargs))
    return outcome, recorder


@pytest.mark.slow  # three real trials per method
@pytest.mark.parametrize(
    ("method", "train"),
    [
        ("full", {}),
        ("full", {"scheduler": "reduce_on_plateau"}),
        ("lora", {}),
        ("unfreeze", {}),
        ("dann", {}),
    ],
    ids=["full", "full-plateau", "lora", "unfreeze", "dann"],
)
def test_a_trial_killed_after_an_evaluation_resumes_to_the_same_result(
    tmp_path: Path,
    tiny_model: Path,
    sentiment_csv: Path,
    domain_csv: Path,
    method: str,
    train: dict[str, Any],
) -> None:
    data = domain_csv if method == "dann" else sentiment_csv
    cfg = config(tiny_model, data, method, **train)
    uninterrupted, expected = baseline(cfg, tmp_path)
    folder = tmp_path / "retried"
    with pytest.raises(Killed):
        run_trial(cfg, request(folder, callbacks=[KillAfterFirstEvaluation()]))
    steps_per_epoch = len(expected.steps) // 3
    assert resumable_step(folder / "resume") == steps_per_epoch
    recorder = Recorder()
    resumed = run_trial(cfg, request(folder, callbacks=[recorder]))
    assert_same_result(resumed, uninterrupted, (folder, tmp_path / "uninterrupted"))
    # Only the steps after the resume ran again, each training what (and with the lambda) the
    # uninterrupted trial's same step did: unfreezing and dann's schedule follow the step.
    assert min(recorder.steps) == steps_per_epoch
    assert recorder.steps == {s: v for s, v in expected.steps.items() if s >= steps_per_epoch}
    if method == "unfreeze":
        assert len(set(expected.steps.values())) == 3  # one unfreezing step per epoch
    if method == "dann":
        assert len({lam for _, lam in expected.steps.values()}) == len(expected.steps)
    assert (folder / "resume").is_dir()  # left for the caller to remove
    assert resumable_step(folder / "resume") == 3 * steps_per_epoch


def test_a_stop_ends_the_trial_after_its_step_with_the_state_written(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    cfg = config(tiny_model, sentiment_csv, "full")
    uninterrupted, _ = baseline(cfg, tmp_path)
    folder, stop = tmp_path / "stopped", threading.Event()

    def signal(_: Any) -> None:  # as a SIGTERM handler would: from another thread
        setter = threading.Thread(target=stop.set)
        setter.start()
        setter.join()

    with pytest.raises(TrialInterrupted) as info:
        run_trial(cfg, request(folder, stop=stop, callbacks=[AtStep(STEPS_PER_EPOCH + 2, signal)]))
    assert info.value.step == STEPS_PER_EPOCH + 2  # mid-epoch 2: not waiting for its end
    so_far = info.value.outcome
    assert so_far is not None and [e["epoch"] for e in evaluations(so_far)] == [1.0]
    assert so_far.value == evaluations(uninterrupted)[0]["eval_accuracy"]
    assert resumable_step(folder / "resume") == STEPS_PER_EPOCH + 2
    # A temp folder a crash left beside the state is not read, and is cleaned up.
    leftover = folder / ".resume-tmp-crashed"
    leftover.mkdir()
    (leftover / MARKER).write_text('{"format": 1, "st')
    # The retry writes its checkpoint elsewhere (as under a new trial number): the best so far
    # comes along with the state that names it.
    retry = dataclasses.replace(request(folder), checkpoint_dir=folder / "ckpt-retry")
    resumed = run_trial(cfg, retry)
    assert not leftover.exists()
    assert_same_result(resumed, uninterrupted, (folder, tmp_path / "uninterrupted"))
    assert resumed.checkpoint == folder / "ckpt-retry"
    assert resumed.checkpoint_sha256 == hash_folder(folder / "ckpt-retry")


def test_a_stop_at_an_epochs_last_step_evaluates_that_epoch_first(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    cfg = config(tiny_model, sentiment_csv, "full")
    uninterrupted, _ = baseline(cfg, tmp_path)
    folder, stop = tmp_path / "stopped", threading.Event()
    with pytest.raises(TrialInterrupted) as info:
        run_trial(
            cfg,
            request(folder, stop=stop, callbacks=[AtStep(STEPS_PER_EPOCH, lambda _: stop.set())]),
        )
    assert info.value.step == STEPS_PER_EPOCH
    assert info.value.outcome is not None
    assert [e["epoch"] for e in evaluations(info.value.outcome)] == [1.0]
    resumed = run_trial(cfg, request(folder))
    assert_same_result(resumed, uninterrupted, (folder, tmp_path / "uninterrupted"))


def test_a_stop_during_the_final_step_lets_the_trial_complete(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    stop = threading.Event()
    last = 3 * STEPS_PER_EPOCH
    outcome = run_trial(
        config(tiny_model, sentiment_csv, "full"),
        request(tmp_path, stop=stop, callbacks=[AtStep(last, lambda _: stop.set())]),
    )
    assert [e["epoch"] for e in evaluations(outcome)] == [1.0, 2.0, 3.0]
    assert resumable_step(tmp_path / "resume") == last


def set_nan(model: torch.nn.Module) -> None:
    with torch.no_grad():
        next(p for n, p in model.named_parameters() if "classifier" in n).fill_(float("nan"))


def infinite_gradient(model: torch.nn.Module) -> None:
    weight = next(p for n, p in model.named_parameters() if "classifier" in n)
    weight.register_hook(lambda grad: grad * float("inf"))


@pytest.mark.parametrize(("inject", "what"), [(set_nan, "loss"), (infinite_gradient, "grad_norm")])
def test_a_non_finite_loss_or_gradient_ends_the_trial_at_that_step(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, inject: Any, what: str
) -> None:
    recorder = Recorder()
    with pytest.raises(NonFiniteError) as info:
        run_trial(
            config(tiny_model, sentiment_csv, "full"),
            request(tmp_path, callbacks=[AtStep(2, inject), recorder]),
        )
    assert (info.value.step, info.value.what) == (3, what)
    assert max(recorder.steps) == 2  # step 3 began (index 2) and no step after it
    assert resumable_step(tmp_path / "resume") is None  # before the first evaluation


def test_running_out_of_memory_says_with_which_batch(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    def exhaust(_: Any) -> None:
        raise MemoryError

    with pytest.raises(TrialOutOfMemory) as info:
        run_trial(
            config(tiny_model, sentiment_csv, "full", batch_size=8, gradient_accumulation_steps=2),
            request(tmp_path, callbacks=[AtStep(1, exhaust)]),
        )
    assert (info.value.batch_size, info.value.accumulation) == (8, 2)
    assert isinstance(info.value.__cause__, MemoryError)


def fill_with(step: int) -> Any:
    def fill(staging: Path) -> None:
        (staging / "weights").write_text(str(step))

    return fill


def test_the_state_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    folder = Layout.at(tmp_path).resume_dir("s", 4)
    assert folder == tmp_path / "resume" / "s" / "trial-4"
    assert not has_resumable(folder) and resumable_step(folder) is None
    write_state(folder, fill=fill_with(6), record={"step": 6})
    write_state(folder, fill=fill_with(12), record={"step": 12})
    assert resumable_step(folder) == 12 and (folder / "weights").read_text() == "12"
    assert [p.name for p in folder.parent.iterdir()] == ["trial-4"]

    def dies(staging: Path) -> None:
        (staging / "weights").write_text("half")
        raise Killed

    with pytest.raises(Killed):
        write_state(folder, fill=dies, record={"step": 18})
    assert resumable_step(folder) == 12  # the dead write's temp folder is not complete
    assert recover(folder) == folder and (folder / "weights").read_text() == "12"
    assert [p.name for p in folder.parent.iterdir()] == ["trial-4"]


def test_a_death_between_the_renames_leaves_a_complete_state_to_pick(tmp_path: Path) -> None:
    folder = tmp_path / "trial-0"
    write_state(folder, fill=fill_with(6), record={"step": 6})
    aside = tmp_path / ".trial-0-old"
    folder.rename(aside)  # the first rename done, the second not: no folder at all
    assert resumable_step(folder) == 6
    write_state(tmp_path / "other", fill=fill_with(12), record={"step": 12})
    (tmp_path / "other").rename(tmp_path / ".trial-0-tmp-x1")  # the new state, complete
    assert has_resumable(folder) and resumable_step(folder) == 12
    assert recover(folder) == folder
    assert (folder / "weights").read_text() == "12"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trial-0"]
    shutil.rmtree(folder)
    folder.mkdir()  # made by a caller, empty: nothing to resume, and left there
    assert recover(folder) is None and not has_resumable(folder) and folder.is_dir()


@pytest.mark.slow  # two real trials
def test_a_trial_killed_after_a_mid_epoch_evaluation_resumes_to_the_same_result(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    """train.eval_every inside an epoch: the state is written at each evaluation, so a trial
    dies and resumes mid-epoch (Trainer skips the epoch's batches already trained)."""
    cfg = config(tiny_model, sentiment_csv, "full", eval_every=3)
    uninterrupted, expected = baseline(cfg, tmp_path)
    total = len(expected.steps)
    assert total == 3 * STEPS_PER_EPOCH
    folder = tmp_path / "retried"
    with pytest.raises(Killed):
        run_trial(cfg, request(folder, callbacks=[KillAfterEvaluation(6)]))
    assert resumable_step(folder / "resume") == 6  # the second evaluation, inside epoch 1
    recorder = Recorder()
    resumed = run_trial(cfg, request(folder, callbacks=[recorder]))
    steps = [*range(3, total + 1, 3), total]
    epochs = [round(s / STEPS_PER_EPOCH, 4) for s in sorted(set(steps))]
    got = [round(e["epoch"], 4) for e in evaluations(uninterrupted)]
    assert got == epochs
    assert_same_result(
        resumed,
        uninterrupted,
        (folder, tmp_path / "uninterrupted"),
        epochs=[e["epoch"] for e in evaluations(uninterrupted)],
    )
    assert min(recorder.steps) == 6 and set(recorder.steps) == set(range(6, total))
