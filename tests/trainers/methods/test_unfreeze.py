"""Gradual unfreezing on real tiny models: the schedule, optimizer state that survives each
unfreezing step, frozen weights that stay put, discriminative rates, the block table."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import torch
from torch import nn
from transformers import (
    AutoModelForSequenceClassification,
    PreTrainedModel,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from support.trials import trial_request
from tunefleet.config import SweepConfig, TrainConfig, parse_config
from tunefleet.errors import ConfigError
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.methods.unfreeze import GradualUnfreezing, split_units, unfrozen_at
from tunefleet.trainers.optimization import build_optimizer, build_scheduler
from tunefleet.trainers.run import run_trial

LR = 3e-3


def sweep_config(model: Path, data: Path, **unfreeze: Any) -> SweepConfig:
    return parse_config(
        {
            "name": "unit",
            "model": {"name_or_path": str(model)},
            "data": {"train": str(data), "max_length": 32},
            "train": {
                "method": "unfreeze",
                "epochs": 4,
                "batch_size": 16,
                "learning_rate": LR,
                "weight_decay": 0.1,  # frozen weights must escape decay too
                "unfreeze": unfreeze,
            },
        }
    )


def tiny_bert(folder: Path) -> PreTrainedModel:
    torch.manual_seed(0)
    return cast(
        PreTrainedModel, AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)
    )


def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class Recorder(TrainerCallback):
    """What the schedule did, seen from a plain callback running after the method's."""

    def __init__(self) -> None:
        self.trainable: list[int] = []
        self.global_step: list[int] = []
        self.steps: list[dict[str, int | None]] = []
        self.changed: list[dict[str, bool]] = []
        self.initial: dict[str, list[torch.Tensor]] = {}
        self.lrs: list[tuple[str, float, float]] = []

    @staticmethod
    def units(model: Any) -> dict[str, nn.Module]:
        return {
            "head": model.classifier,
            "top": model.bert.encoder.layer[1],
            "bottom": model.bert.encoder.layer[0],
            "embeddings": model.bert.embeddings,
        }

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model, optimizer = kwargs["model"], kwargs["optimizer"]
        self.trainable.append(trainable(model))
        self.initial = {
            unit: [p.detach().clone() for p in module.parameters()]
            for unit, module in self.units(model).items()
        }
        self.lrs = [(g["unit"], g["lr"], g["initial_lr"]) for g in optimizer.param_groups]

    def on_epoch_end(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        model, optimizer = kwargs["model"], kwargs["optimizer"]
        self.trainable.append(trainable(model))
        self.global_step.append(state.global_step)
        modules = self.units(model)
        self.changed.append(
            {
                unit: any(
                    not torch.equal(p, before)
                    for p, before in zip(module.parameters(), self.initial[unit], strict=True)
                )
                for unit, module in modules.items()
            }
        )
        probes = {unit: next(module.parameters()) for unit, module in modules.items()}
        self.steps.append(
            {
                unit: int(optimizer.state[p]["step"]) if p in optimizer.state else None
                for unit, p in probes.items()
            }
        )


def test_unfreezes_on_schedule_keeping_earlier_state(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    recorder = Recorder()
    run_trial(
        sweep_config(
            tiny_model, sentiment_csv, blocks_per_step=1, every_epochs=1, layer_lr_decay=0.5
        ),
        trial_request(tmp_path, callbacks=[recorder]),
    )
    reference = tiny_bert(tiny_model)
    head = numel(reference.classifier) + numel(reference.bert.pooler)
    block, embeddings = numel(reference.bert.encoder.layer[0]), numel(reference.bert.embeddings)
    assert head + 2 * block + embeddings == numel(reference)  # the units cover the model
    # Before training (prepare), then at the end of epochs 1..4.
    assert recorder.trainable == [head, head, head + block, head + 2 * block, numel(reference)]

    # Each unit's first step is the epoch it unfroze; the head's count never restarts.
    g1, g2, g3, g4 = recorder.global_step
    assert recorder.steps == [
        {"head": g1, "top": None, "bottom": None, "embeddings": None},
        {"head": g2, "top": g2 - g1, "bottom": None, "embeddings": None},
        {"head": g3, "top": g3 - g1, "bottom": g3 - g2, "embeddings": None},
        {"head": g4, "top": g4 - g1, "bottom": g4 - g2, "embeddings": g4 - g3},
    ]
    # Frozen weights are bit-identical (no update, no weight decay) until they unfreeze.
    unfrozen_by_epoch = [
        {"head"},
        {"head", "top"},
        {"head", "top", "bottom"},
        set(Recorder.units(reference)),
    ]
    assert [{u for u, moved in c.items() if moved} for c in recorder.changed] == unfrozen_by_epoch

    # Step 0 rates: peak * 0.5**depth, head depth 0, embeddings below both blocks.
    scale = {"head": 1.0, "block.1": 0.5, "block.0": 0.25, "embeddings": 0.125}
    assert {unit for unit, _, _ in recorder.lrs} == set(scale)
    for unit, lr, initial in recorder.lrs:
        assert lr == pytest.approx(LR * scale[unit]) and initial == pytest.approx(LR * scale[unit])


def test_unfreezing_keeps_the_optimizer_state_of_trained_parameters(
    tmp_path: Path, tiny_model: Path
) -> None:
    config = TrainConfig(method="unfreeze", learning_rate=LR, unfreeze={"blocks_per_step": 1})
    method = get_method("unfreeze")
    model = method.prepare(tiny_bert(tiny_model), config)
    optimizer = build_optimizer(method.param_groups(model, config) or [], config)
    head = model.classifier.weight
    top = model.bert.encoder.layer[1].output.dense.weight
    bottom = model.bert.encoder.layer[0].output.dense.weight
    bottom_before = bottom.detach().clone()
    batch = {"input_ids": torch.randint(5, 100, (4, 12)), "labels": torch.tensor([0, 1, 0, 1])}

    def step() -> None:
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    step()
    moments = optimizer.state[head]["exp_avg"].clone()
    assert top not in optimizer.state and top.grad is None
    (callback,) = method.callbacks(config)
    assert isinstance(callback, GradualUnfreezing)
    state = TrainerState()
    state.epoch = 1.0
    callback.on_epoch_begin(
        TrainingArguments(output_dir=str(tmp_path), report_to=[]),
        state,
        TrainerControl(),
        model=model,
    )
    assert top.requires_grad and not bottom.requires_grad
    assert torch.equal(optimizer.state[head]["exp_avg"], moments)  # untouched by unfreezing
    step()
    assert int(optimizer.state[head]["step"]) == 2
    assert int(optimizer.state[top]["step"]) == 1
    assert bottom not in optimizer.state and torch.equal(bottom, bottom_before)


def test_param_groups_hold_every_parameter_once_with_its_scale(tiny_model: Path) -> None:
    config = TrainConfig(method="unfreeze", weight_decay=0.1, unfreeze={"layer_lr_decay": 0.5})
    method = get_method("unfreeze")
    model = method.prepare(tiny_bert(tiny_model), config)
    groups = method.param_groups(model, config) or []
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == len(list(model.parameters()))
    assert groups[0]["unit"] == "head"  # Trainer logs group 0's rate: the peak
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups:
        scale = {"head": 1, "block.1": 0.5, "block.0": 0.25, "embeddings": 0.125}[group["unit"]]
        assert group["lr_scale"] == scale
        decayed = {
            not ("bias" in names[id(p)] or "LayerNorm" in names[id(p)]) for p in group["params"]
        }
        assert decayed == {group["weight_decay"] == 0.1}
    optimizer = build_optimizer(groups, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=5, maximize=True)
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx(scheduler.get_last_lr())


@pytest.mark.parametrize(
    ("blocks", "per_step", "expected"),
    [
        (2, 1, [(0, False), (1, False), (2, False), (2, True), (2, True)]),
        (5, 2, [(0, False), (2, False), (4, False), (5, False), (5, True)]),
        (2, 2, [(0, False), (2, False), (2, True), (2, True), (2, True)]),
    ],
)
def test_schedule_steps(blocks: int, per_step: int, expected: list[tuple[int, bool]]) -> None:
    assert [unfrozen_at(step, blocks, per_step) for step in range(5)] == expected


def tiny_family_models() -> dict[str, tuple[nn.Module, set[str]]]:
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        GPT2Config,
        GPT2ForSequenceClassification,
        LlamaConfig,
        LlamaForSequenceClassification,
    )

    small = {"vocab_size": 64, "num_labels": 2}
    return {
        "bert": (
            BertForSequenceClassification(
                BertConfig(
                    hidden_size=16,
                    num_hidden_layers=3,
                    num_attention_heads=2,
                    intermediate_size=32,
                    **small,
                )
            ),
            {"bert.pooler.", "classifier."},
        ),
        "distilbert": (
            DistilBertForSequenceClassification(
                DistilBertConfig(dim=16, n_layers=3, n_heads=2, hidden_dim=32, **small)
            ),
            {"pre_classifier.", "classifier."},
        ),
        "gpt2": (
            GPT2ForSequenceClassification(GPT2Config(n_embd=16, n_layer=3, n_head=2, **small)),
            {"transformer.ln_f.", "score."},
        ),
        "llama": (
            LlamaForSequenceClassification(
                LlamaConfig(
                    hidden_size=16,
                    intermediate_size=32,
                    num_hidden_layers=3,
                    num_attention_heads=2,
                    num_key_value_heads=2,
                    **small,
                )
            ),
            {"model.norm.", "score."},
        ),
    }


@pytest.mark.parametrize("family", ["bert", "distilbert", "gpt2", "llama"])
def test_block_table_finds_each_family(family: str) -> None:
    model, head_prefixes = tiny_family_models()[family]
    units = split_units(model)
    assert [index for index, _ in units.blocks] == [2, 1, 0]
    assert units.embeddings
    config = TrainConfig(method="unfreeze", unfreeze={"blocks_per_step": 3})
    get_method("unfreeze").prepare(cast(PreTrainedModel, model), config)
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {n for n, _ in units.head} == names
    assert {next(pre for pre in head_prefixes if n.startswith(pre)) for n in names} == head_prefixes


def test_unknown_architecture_names_the_option_and_the_known_model_types() -> None:
    with pytest.raises(ConfigError) as info:
        get_method("unfreeze").prepare(
            cast(PreTrainedModel, nn.Sequential(nn.Linear(4, 4))), TrainConfig(method="unfreeze")
        )
    assert info.value.problems[0][0] == "train.method"
    assert all(kind in str(info.value) for kind in ("bert", "distilbert", "gpt2", "llama"))


def test_checkpoint_is_the_whole_model(tmp_path: Path, tiny_model: Path) -> None:
    method = get_method("unfreeze")
    model = method.prepare(tiny_bert(tiny_model), TrainConfig(method="unfreeze")).eval()
    method.save(model, tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    again = method.load(tmp_path, lambda: tiny_bert(tiny_model)).eval()
    ids = torch.randint(5, 100, (2, 9))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, again(input_ids=ids).logits)
