"""DANN on a tiny real BERT: the reversed gradient, the lambda schedule, target labels never
read, checkpoints that reload to the task model's logits, and target metrics in every
evaluation (of dann and of a source-only baseline alike)."""

from __future__ import annotations

import csv
import math
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch.nn import functional as F
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from support.trials import trial_request
from tunefleet.config import DannConfig, SweepConfig, TrainConfig, parse_config
from tunefleet.trainers import run as run_module
from tunefleet.trainers.checkpoint import Manifest
from tunefleet.trainers.data import Splits, Table, load_splits
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.methods.dann import (
    DOMAIN_CLASSIFIER_FILE,
    DomainAdversarial,
    lambda_at,
)
from tunefleet.trainers.metrics import classification_metrics, cross_entropy
from tunefleet.trainers.model import load_classifier, load_tokenizer
from tunefleet.trainers.predict import Predictor, batched_logits
from tunefleet.trainers.run import TrialOutcome, run_trial

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "data" / "sentiment-all-domains.csv"
PROBE = ["the food was wonderful", "a dull film, never again", "works as described"]
TIMING = ("runtime", "per_second", "preparation_time", "total_flos")


@pytest.fixture(scope="module")
def domain_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 rows per (domain, label) of yelp (source) and imdb (target), plus amazon rows that no
    config names: small enough for seconds-long trials."""
    with EXAMPLE.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    picked = [
        row
        for domain, count in (("yelp", 40), ("imdb", 40), ("amazon", 5))
        for label in ("0", "1")
        for row in [r for r in rows if r["domain"] == domain and r["label"] == label][:count]
    ]
    random.Random(1).shuffle(picked)
    path = tmp_path_factory.mktemp("domains") / "domains.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "domain"])
        writer.writeheader()
        writer.writerows(picked)
    return path


def domain_config(model: Path, data: Path, method: str) -> SweepConfig:
    return parse_config(
        {
            "name": "unit",
            "model": {"name_or_path": str(model)},
            "data": {
                "train": str(data),
                "domain_column": "domain",
                "source_domains": ["yelp"],
                "target_domains": ["imdb"],
                "max_length": 32,
            },
            "train": {
                "method": method,
                "epochs": 2,
                "batch_size": 16,
                "learning_rate": 3e-3,
                "logging_steps": 2,
                "dann": {"lambda": 0.7, "schedule": "ganin", "hidden": 16},
            },
        }
    )


class Recorder(TrainerCallback):
    """Lambda at every step and the live model's probe logits at every evaluation (after
    BestCheckpointCallback, which runs earlier, has written that evaluation's checkpoint)."""

    def __init__(self) -> None:
        self.lambdas: list[tuple[int, int, float]] = []
        self.logits: dict[float, np.ndarray] = {}

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        model = kw["model"]
        if isinstance(model, DomainAdversarial):
            self.lambdas.append((state.global_step, state.max_steps, model.lambda_))

    def on_evaluate(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        model = kw["model"]
        model.eval()
        logits = batched_logits(model, kw["processing_class"], PROBE, max_length=32)
        self.logits[float(state.epoch or 0)] = logits


def trial(config: SweepConfig, folder: Path) -> tuple[TrialOutcome, Recorder]:
    recorder = Recorder()
    outcome = run_trial(
        config,
        trial_request(folder, callbacks=[recorder]),
    )
    return outcome, recorder


@pytest.fixture(scope="module")
def dann_trial(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, domain_csv: Path
) -> tuple[TrialOutcome, Recorder, Path]:
    folder = tmp_path_factory.mktemp("dann")
    outcome, recorder = trial(domain_config(tiny_model, domain_csv, "dann"), folder)
    return outcome, recorder, folder / "ckpt"


def wrapped(tiny_model: Path, settings: DannConfig) -> DomainAdversarial:
    torch.manual_seed(0)
    classifier = load_classifier(str(tiny_model), ("0", "1"))
    model = get_method("dann").prepare(classifier, TrainConfig(method="dann", dann=settings))
    assert isinstance(model, DomainAdversarial)
    return model


@pytest.mark.parametrize("lam", [0.3, 2.5])
def test_encoder_receives_the_reversed_scaled_domain_gradient(tiny_model: Path, lam: float) -> None:
    model = wrapped(tiny_model, DannConfig(lambda_=lam, schedule="constant"))
    model.eval()  # no dropout: the pooled output is exactly what the heads read
    pooled: list[torch.Tensor] = []
    model.classifier.bert.pooler.register_forward_hook(
        lambda module, args, output: pooled.append(output)
    )
    batch = load_tokenizer(str(tiny_model))([*PROBE, "fine"], padding=True, return_tensors="pt")
    domains = torch.tensor([0, 1, 0, 1])
    out = model(**batch, domain_labels=domains)
    (representation,) = pooled
    representation.retain_grad()
    out.domain_loss.backward()

    # The same domain loss on a detached copy, with no reversal in between.
    plain = representation.detach().clone().requires_grad_(True)
    reference = model.domain_classifier(plain)
    torch.testing.assert_close(out.domain_logits, reference, rtol=0, atol=1e-6)
    first = model.domain_classifier[0].weight
    expected, own = torch.autograd.grad(F.cross_entropy(reference, domains), [plain, first])
    assert expected.abs().max() > 1e-4  # a vanishing gradient would pass trivially
    assert representation.grad is not None
    torch.testing.assert_close(representation.grad, -lam * expected, rtol=0, atol=1e-6)
    # The domain classifier itself descends its loss: only the encoder's side is reversed.
    assert first.grad is not None
    torch.testing.assert_close(first.grad, own, rtol=0, atol=1e-6)


def test_gpt2_domain_classifier_reads_the_last_real_token() -> None:
    from transformers import GPT2Config, GPT2ForSequenceClassification

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16, num_labels=2, pad_token_id=0
    )
    classifier = GPT2ForSequenceClassification(config)
    model = get_method("dann").prepare(classifier, TrainConfig(method="dann"))
    assert isinstance(model, DomainAdversarial)
    model.eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [8, 9, 10, 11, 12]])
    mask = (ids != 0).long()
    read: list[torch.Tensor] = []
    model.domain_classifier[0].register_forward_pre_hook(lambda module, args: read.append(args[0]))
    out = model(input_ids=ids, attention_mask=mask, domain_labels=torch.tensor([0, 1]))
    hidden = classifier.transformer(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(read[0], hidden[torch.arange(2), torch.tensor([2, 4])])
    torch.testing.assert_close(out.logits, classifier(input_ids=ids, attention_mask=mask).logits)


@pytest.mark.parametrize("schedule", ["ganin", "constant"])
def test_lambda_schedule_through_the_real_callback(tiny_model: Path, schedule: str) -> None:
    settings = DannConfig(lambda_=0.8, schedule=schedule, gamma=10.0)
    model = wrapped(tiny_model, settings)
    (callback,) = get_method("dann").callbacks(TrainConfig(method="dann", dann=settings))
    args, control = TrainingArguments("unused", report_to=[]), TrainerControl()
    state = TrainerState(max_steps=40)
    callback.on_train_begin(args, state, control, model=model)
    assert model.lambda_ == (0.0 if schedule == "ganin" else 0.8)
    for step, p in ((0, 0.0), (20, 0.5), (40, 1.0)):
        state.global_step = step
        callback.on_step_begin(args, state, control, model=model)
        expected = 0.8 * (2 / (1 + math.exp(-10.0 * p)) - 1) if schedule == "ganin" else 0.8
        assert model.lambda_ == pytest.approx(expected, abs=1e-12)


def test_a_real_trial_follows_the_schedule(dann_trial: tuple[TrialOutcome, Recorder, Path]) -> None:
    _, recorder, _ = dann_trial
    settings = DannConfig(lambda_=0.7, schedule="ganin")
    assert recorder.lambdas[0] == (0, 16, 0.0)  # 128 rows / 16 = 8 steps per epoch, 2 epochs
    assert [step for step, _, _ in recorder.lambdas] == list(range(16))
    for step, total, value in recorder.lambdas:
        assert value == pytest.approx(lambda_at(settings, step / total), abs=1e-12)


def test_target_labels_are_never_read(
    dann_trial: tuple[TrialOutcome, Recorder, Path],
    tmp_path: Path,
    tiny_model: Path,
    domain_csv: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Poisons exactly the rows that land in target_train (after the split: the held-out part is
    stratified by label, so poisoning the file would move rows between the parts)."""
    clean, _, clean_ckpt = dann_trial
    flipped: list[Table] = []

    def poisoned(data: Any) -> Splits:
        splits = load_splits(data)
        assert splits.target_train is not None
        flip = {"0": "1", "1": "0"}
        table = Table(splits.target_train.texts, tuple(flip[x] for x in splits.target_train.labels))
        flipped.append(table)
        return replace(splits, target_train=table)

    monkeypatch.setattr(run_module, "load_splits", poisoned)
    dirty, _ = trial(domain_config(tiny_model, domain_csv, "dann"), tmp_path)
    assert flipped and len(flipped[0]) == 64

    def facts(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in h.items() if not k.endswith(TIMING)} for h in history]

    assert any("loss" in h for h in clean.history)
    assert facts(dirty.history) == facts(clean.history)
    for name in ("model.safetensors", DOMAIN_CLASSIFIER_FILE):
        ours, theirs = load_file(tmp_path / "ckpt" / name), load_file(clean_ckpt / name)
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_checkpoint_reloads_to_the_task_logits(
    dann_trial: tuple[TrialOutcome, Recorder, Path], domain_csv: Path, tiny_model: Path
) -> None:
    outcome, recorder, folder = dann_trial
    manifest = Manifest.read(folder)
    assert manifest.method == "dann" and manifest.epoch == outcome.best_epoch
    assert {"model.safetensors", "config.json", DOMAIN_CLASSIFIER_FILE} <= set(
        outcome.checkpoint_sha256 or {}
    )
    domain_head = load_file(folder / DOMAIN_CLASSIFIER_FILE)
    assert {k: tuple(v.shape) for k, v in domain_head.items()} == {
        "0.weight": (16, 32),
        "0.bias": (16,),
        "2.weight": (2, 16),
        "2.bias": (2,),
    }
    predictor = Predictor.from_checkpoint(folder)
    assert type(predictor.model).__name__ == "BertForSequenceClassification"  # no domain head
    assert np.array_equal(predictor.logits(PROBE), recorder.logits[manifest.epoch])

    # eval_loss is the source task loss, eval_target_* the held-out target rows' scores.
    splits = load_splits(domain_config(tiny_model, domain_csv, "dann").data)
    assert splits.target_eval is not None

    def scored(table: Table) -> tuple[np.ndarray, np.ndarray]:
        labels = np.array([int(x) for x in table.labels])
        return predictor.logits(list(table.texts)), labels

    logits, labels = scored(splits.eval)
    assert outcome.metrics["eval_loss"] == pytest.approx(cross_entropy(logits, labels), abs=1e-5)
    logits, labels = scored(splits.target_eval)
    target = classification_metrics(logits, labels)
    assert outcome.metrics["eval_target_accuracy"] == pytest.approx(target["accuracy"])
    assert outcome.metrics["eval_target_f1"] == pytest.approx(target["f1"])


def test_every_evaluation_reports_source_and_target_metrics(
    dann_trial: tuple[TrialOutcome, Recorder, Path],
    tmp_path: Path,
    tiny_model: Path,
    domain_csv: Path,
) -> None:
    baseline, _ = trial(domain_config(tiny_model, domain_csv, "full"), tmp_path)
    wanted = {"eval_loss", "eval_accuracy", "eval_f1", "eval_target_accuracy", "eval_target_f1"}
    for outcome, steps in ((dann_trial[0], 16), (baseline, 8)):
        evaluations = [h for h in outcome.history if any(k.startswith("eval_") for k in h)]
        assert [h["epoch"] for h in evaluations] == [1.0, 2.0]
        assert all(wanted <= set(h) for h in evaluations)
        # dann trains on source + target rows, the baseline on its 64 source rows only.
        assert max(h["step"] for h in outcome.history) == steps
