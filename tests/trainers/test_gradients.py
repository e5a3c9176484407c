"""Gradient norms by module group: exact against torch's own norm, group by group, on real tiny
models; measured before clipping in real trials; deep models and gradual unfreezing."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.nn.utils import get_total_norm
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from support.trials import tiny_config, trial_request
from tunefleet.config import TrainConfig
from tunefleet.trainers.gradients import GradientGroups, GradientNormLogger, assign_groups
from tunefleet.trainers.methods import get_method, method_names
from tunefleet.trainers.methods.unfreeze import apply_schedule
from tunefleet.trainers.model import load_classifier, load_tokenizer
from tunefleet.trainers.run import run_trial
from tunefleet.trainers.trainer import TunefleetTrainer

TEXTS = ["the food was wonderful", "a dull film, never again", "works as described", "fine"]
BERT_BODY = {"embeddings", "block_00", "block_01", "head"}


def prepared(tiny_model: Path, method: str) -> nn.Module:
    torch.manual_seed(0)
    classifier = load_classifier(str(tiny_model), ("0", "1"))
    return get_method(method).prepare(classifier, TrainConfig(method=method))


def backward(model: nn.Module, tiny_model: Path, **extra: Tensor) -> None:
    batch = load_tokenizer(str(tiny_model))(TEXTS, padding=True, return_tensors="pt")
    out = model(**batch, labels=torch.tensor([1, 0, 1, 0]), **extra)
    out.loss.backward()


def expected_group(name: str, method: str) -> str:
    """Written out for BERT, independently of the grouping under test."""
    if {"lora": "lora_", "dann": "domain_classifier."}.get(method, "\0") in name:
        return method
    if ".embeddings." in f".{name}":
        return "embeddings"
    if block := re.search(r"\.encoder\.layer\.(\d+)\.", name):
        return f"block_{int(block.group(1)):02d}"
    assert re.search(r"(^|\.)(pooler|classifier)\.(dense\.|modules_to_save|original_module)?", name)
    return "head"


def reference(model: nn.Module, groups: GradientGroups) -> dict[str, float]:
    """torch's total norm over each group's gradients, the groups taken from the names."""
    grads: dict[str, list[Tensor]] = {}
    for name, param in model.named_parameters():
        if param.grad is not None:
            grads.setdefault(groups.assignment[name], []).append(param.grad)
    return {f"grad_norm/{g}": get_total_norm(members).item() for g, members in grads.items()}


def all_grads(model: nn.Module) -> list[Tensor]:
    return [p.grad for p in model.parameters() if p.grad is not None]


@pytest.mark.parametrize(
    ("method", "reported"),
    [
        ("full", BERT_BODY),
        ("lora", {"lora", "head"}),  # the body is frozen: no gradient, no norm
        ("dann", {"dann", *BERT_BODY}),
    ],
)
def test_group_norms_match_torch_group_by_group(
    tiny_model: Path, method: str, reported: set[str]
) -> None:
    model = prepared(tiny_model, method)
    extra = {"domain_labels": torch.tensor([0, 1, 0, 1])} if method == "dann" else {}
    backward(model, tiny_model, **extra)
    groups = GradientGroups(model, get_method(method))

    total = groups.measure()
    logs = groups.as_logs()

    for name in groups.assignment:
        assert groups.assignment[name] == expected_group(name, method), name
    owned = {*BERT_BODY, method} if method != "full" else BERT_BODY
    assert set(groups.names) == owned
    assert set(logs) == {f"grad_norm/{g}" for g in reported}
    assert all(value > 0 for value in logs.values())
    expected = reference(model, groups)
    assert logs == pytest.approx(expected, rel=1e-5, abs=1e-5)
    torch.testing.assert_close(total, get_total_norm(all_grads(model)), rtol=1e-5, atol=1e-5)
    assert sum(v * v for v in logs.values()) == pytest.approx(total.item() ** 2, rel=1e-5)


@pytest.mark.parametrize("method", method_names())
def test_a_method_owns_exactly_the_parameters_it_adds(tiny_model: Path, method: str) -> None:
    torch.manual_seed(0)
    classifier = load_classifier(str(tiny_model), ("0", "1"))
    body = {id(p) for p in classifier.parameters()}
    model = get_method(method).prepare(classifier, TrainConfig(method=method))
    # peft's trainable copy of the head is new too, but it is the head, not the method's.
    added = {
        name
        for name, p in model.named_parameters()
        if id(p) not in body and "modules_to_save" not in name
    }
    owned = {name for name, _ in model.named_parameters() if get_method(method).owns(name)}
    assert owned == added
    assert bool(owned) == (method not in ("full", "unfreeze"))


OWN_MARKERS = {
    "lora": "lora_",
    "dann": "domain_classifier.",
    "prompt": "prompt_encoder.",
    "adapter": ".adapter.",
}


def expected_decoder_group(name: str, method: str) -> str:
    """Written out for GPT-2 and Llama-style names, independently of the grouping under test:
    blocks named as encoder blocks are, the final norm with the head."""
    if OWN_MARKERS.get(method, "\0") in name:
        return method
    if re.search(r"(^|\.)(transformer\.(wte|wpe)|model\.embed_tokens)\.", name):
        return "embeddings"
    if block := re.search(r"(^|\.)(transformer\.h|model\.layers)\.(\d+)\.", name):
        return f"block_{int(block.group(3)):02d}"
    assert re.search(r"(^|\.)(score|transformer\.ln_f|model\.norm)\.", name), name
    return "head"


@pytest.mark.parametrize(
    ("method", "reported"),
    [
        ("full", {"embeddings", "block_00", "block_01", "head"}),
        ("lora", {"lora", "head"}),  # the final norm is frozen with the body; score trains
        ("prompt", {"prompt", "head"}),
        ("adapter", {"adapter", "block_00", "block_01", "head"}),  # the norms in each block
        ("dann", {"dann", "embeddings", "block_00", "block_01", "head"}),
    ],
)
def test_decoder_blocks_are_grouped_as_encoder_blocks(
    tiny_decoder: Path, method: str, reported: set[str]
) -> None:
    tokenizer = load_tokenizer(str(tiny_decoder))
    torch.manual_seed(0)
    classifier = load_classifier(str(tiny_decoder), ("0", "1"), pad_token_id=tokenizer.pad_token_id)
    model = get_method(method).prepare(classifier, TrainConfig(method=method))
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    extra = {"domain_labels": torch.tensor([0, 1, 0, 1])} if method == "dann" else {}
    model(**inputs, labels=torch.tensor([1, 0, 1, 0]), **extra).loss.backward()
    groups = GradientGroups(model, get_method(method))

    total = groups.measure()
    logs = groups.as_logs()

    for name, group in groups.assignment.items():
        assert group == expected_decoder_group(name, method), name
    assert set(logs) == {f"grad_norm/{g}" for g in reported}
    assert logs == pytest.approx(reference(model, groups), rel=1e-5, abs=1e-5)
    torch.testing.assert_close(total, get_total_norm(all_grads(model)), rtol=1e-5, atol=1e-5)


def test_gradients_of_several_dtypes_are_normed_together() -> None:
    model = nn.ModuleDict(
        {"embeddings": nn.Embedding(7, 5), "classifier": nn.Linear(5, 3).double()}
    )
    tokens = model["embeddings"](torch.tensor([1, 2, 3]))
    model["classifier"](tokens.double()).pow(2).sum().backward()
    groups = GradientGroups(model)

    total = groups.measure()

    expected = {
        "grad_norm/embeddings": get_total_norm(all_grads(model["embeddings"])).item(),
        "grad_norm/head": get_total_norm(all_grads(model["classifier"])).item(),
    }
    assert groups.as_logs() == pytest.approx(expected, rel=1e-6)
    assert total.item() == pytest.approx(math.hypot(*expected.values()), rel=1e-6)


@pytest.mark.parametrize("layers", [12, 13, 24, 30])
def test_deep_models_get_at_most_twelve_contiguous_block_groups(layers: int) -> None:
    config = BertConfig(
        vocab_size=10,
        hidden_size=8,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=8,
    )
    with torch.device("meta"):
        model = BertForSequenceClassification(config)

    assignment = assign_groups(model)

    members: dict[str, set[int]] = {}
    for name, group in assignment.items():
        if block := re.search(r"\.layer\.(\d+)\.", name):
            members.setdefault(group, set()).add(int(block.group(1)))
    runs = sorted(sorted(indices) for indices in members.values())
    assert [i for run in runs for i in run] == list(range(layers))  # contiguous, all, once
    # Runs of one length (the last may be shorter), so the groups' norms stay comparable.
    size = math.ceil(layers / 12)
    assert len(runs) == math.ceil(layers / size) <= 12
    assert {len(run) for run in runs[:-1]} <= {size} and len(runs[-1]) <= size
    for group, indices in members.items():
        first, last = min(indices), max(indices)
        label = f"block_{first:02d}" if first == last else f"blocks_{first:02d}-{last:02d}"
        assert group == label
    blocks = [g for g in GradientGroups(model).names if g.startswith("block")]
    assert blocks == [
        assignment[f"bert.encoder.layer.{run[0]}.output.dense.weight"] for run in runs
    ]


def test_groups_without_gradients_are_not_reported(tiny_model: Path) -> None:
    method = get_method("unfreeze")
    model = prepared(tiny_model, "unfreeze")  # epoch 0: only the head trains
    groups = GradientGroups(model, method)
    backward(model, tiny_model)
    groups.measure()
    assert set(groups.as_logs()) == {"grad_norm/head"}

    one_block = TrainConfig(method="unfreeze", unfreeze={"blocks_per_step": 1}).unfreeze
    apply_schedule(model, one_block, epoch=1)  # the top block
    model.zero_grad(set_to_none=True)
    backward(model, tiny_model)
    total = groups.measure()

    logs = groups.as_logs()
    assert set(logs) == {"grad_norm/head", "grad_norm/block_01"}
    assert logs == pytest.approx(reference(model, groups), rel=1e-5)
    torch.testing.assert_close(total, get_total_norm(all_grads(model)))


class Probe(TrainerCallback):
    """Each training log as the trackers see it, and the gradients the optimizer steps with
    (after clipping), group by group."""

    def __init__(self) -> None:
        self.logs: dict[int, dict[str, float]] = {}
        self.stepped: dict[int, dict[str, float]] = {}

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        grads: dict[str, list[Tensor]] = {}
        for name, param in kw["model"].named_parameters():
            if param.grad is not None:
                grads.setdefault(expected_group(name, "full"), []).append(param.grad)
        norms = {group: get_total_norm(members).item() for group, members in grads.items()}
        norms["total"] = math.sqrt(sum(v * v for v in norms.values()))
        self.stepped[state.global_step + 1] = norms  # the step Trainer logs it as

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if logs is not None and "loss" in logs:
            self.logs[state.global_step] = dict(logs)


def test_trial_logs_pre_clip_group_norms_and_clips_with_their_total(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    limit = 1e-3
    probe = Probe()
    config = tiny_config(
        tiny_model, sentiment_csv, method="full", logging_steps=1, max_grad_norm=limit
    )

    run_trial(config, trial_request(tmp_path, callbacks=[probe]))

    assert len(probe.logs) >= 5 and probe.logs.keys() <= probe.stepped.keys()
    for step, logs in probe.logs.items():
        groups = {k.removeprefix("grad_norm/"): v for k, v in logs.items() if "/" in k}
        assert set(groups) == BERT_BODY
        pre = logs["grad_norm"]
        assert pre == pytest.approx(math.sqrt(sum(v * v for v in groups.values())), rel=1e-5)
        assert pre > 10 * limit  # so clipping had work to do
        post = probe.stepped[step]
        # torch's clipping scale: max_norm / (total + 1e-6)
        assert post["total"] == pytest.approx(pre * limit / (pre + 1e-6), rel=1e-5)
        scaled = {group: post[group] * pre / post["total"] for group in groups}
        assert scaled == pytest.approx(groups, rel=1e-5)


def test_clipping_and_logged_norm_are_trainers_own(tiny_model: Path, tmp_path: Path) -> None:
    """Measured-then-clipped steps train exactly as Trainer's clip_grad_norm_ does."""

    def train(grouped: bool) -> tuple[list[float], dict[str, Tensor]]:
        torch.manual_seed(0)
        model = load_classifier(str(tiny_model), ("0", "1"))
        model.config.hidden_dropout_prob = model.config.attention_probs_dropout_prob = 0.0
        for module in model.modules():
            if isinstance(module, nn.Dropout):
                module.p = 0.0
        tokenizer = load_tokenizer(str(tiny_model))
        rows = [
            {**tokenizer(text, padding="max_length", max_length=12), "labels": i % 2}
            for i, text in enumerate(TEXTS * 6)
        ]
        groups = GradientGroups(model) if grouped else None
        trainer = TunefleetTrainer(
            model=model,
            args=TrainingArguments(
                output_dir=str(tmp_path / str(grouped)),
                max_steps=4,
                per_device_train_batch_size=8,
                learning_rate=1e-2,
                max_grad_norm=0.01,
                logging_steps=1,
                report_to=[],
                use_cpu=True,
                save_strategy="no",
                disable_tqdm=True,
            ),
            train_dataset=rows,
            gradient_groups=groups,
            callbacks=[GradientNormLogger(groups)] if groups is not None else [],
        )
        trainer.train()
        norms = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]
        return norms, {k: v.detach().clone() for k, v in model.state_dict().items()}

    plain_norms, plain_weights = train(grouped=False)
    grouped_norms, grouped_weights = train(grouped=True)

    assert len(plain_norms) == 4 and min(plain_norms) > 0.01  # every step clipped
    assert grouped_norms == pytest.approx(plain_norms, rel=1e-5)
    torch.testing.assert_close(grouped_weights, plain_weights, rtol=1e-5, atol=1e-7)
