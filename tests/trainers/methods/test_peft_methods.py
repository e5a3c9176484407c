"""The peft-based methods (lora and its rslora/dora switches, prefix, prompt, ia3) on real models:
exact trainable counts, frozen weights that stay frozen, exact checkpoint reloads, and trials
through the one training path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import PeftModel
from torch import nn
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DataCollatorWithPadding,
    PreTrainedModel,
)

from support.trials import trial_request
from tunefleet.config import TrainConfig, parse_config
from tunefleet.errors import ConfigError
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.model import load_classifier
from tunefleet.trainers.run import count_parameters, run_trial

LABELS = ("0", "1")
TEXTS = ["the food was wonderful", "never again, awful service and cold soup", "fine", "meh."]

# BERT-base (BertConfig() defaults): 12 layers, hidden 768, FFN 3072; 2 labels.
LAYERS, HIDDEN, FFN = 12, 768, 3072
# peft's SEQ_CLS modules_to_save is ["classifier", "score"]: BERT's classifier trains, the pooler
# does not (it stays frozen with the body).
HEAD = HIDDEN * 2 + 2
LORA_QV = LAYERS * 2 * (HIDDEN * 8 + 8 * HIDDEN)
PREFIX_PROJECTED = 10 * HIDDEN + (HIDDEN * HIDDEN + HIDDEN) + (HIDDEN * LAYERS * 2 * HIDDEN)
PREFIX_PROJECTED += LAYERS * 2 * HIDDEN  # the last projection's bias

COUNTS: dict[str, tuple[dict[str, Any], int]] = {
    "lora": ({"method": "lora", "lora": {"target_modules": ["query", "value"]}}, LORA_QV + HEAD),
    "lora-rslora": (
        {"method": "lora", "lora": {"target_modules": ["query", "value"], "use_rslora": True}},
        LORA_QV + HEAD,  # rank-stabilised scaling changes a constant, not the parameters
    ),
    "lora-dora": (
        {"method": "lora", "lora": {"target_modules": ["query", "value"], "use_dora": True}},
        LORA_QV + LAYERS * 2 * HIDDEN + HEAD,  # one magnitude per output feature
    ),
    "prefix": ({"method": "prefix"}, 10 * LAYERS * 2 * HIDDEN + HEAD),
    "prefix-projected": (
        {"method": "prefix", "prefix": {"projection": True}},
        PREFIX_PROJECTED + HEAD,
    ),
    "prompt": ({"method": "prompt"}, 10 * HIDDEN + HEAD),
    # peft's BERT defaults: key, value (output-scaled, 768 each) and output.dense (feed-forward,
    # input-scaled), which as a suffix matches attention.output.dense (768) and the FFN output
    # (3072).
    "ia3": ({"method": "ia3"}, LAYERS * (HIDDEN + HIDDEN + HIDDEN + FFN) + HEAD),
}


@pytest.mark.parametrize("case", list(COUNTS))
def test_trainable_counts_on_bert_base_match_analysis_and_peft(case: str) -> None:
    train, expected = COUNTS[case]
    # On the meta device nothing is allocated or initialised: only shapes, which is all a
    # count needs, so a 110M-parameter model costs nothing.
    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig(num_labels=2))
        prepared = get_method(train["method"]).prepare(model, TrainConfig(**train))
    assert isinstance(prepared, PeftModel)
    trainable, total = count_parameters(prepared)
    assert trainable == expected
    assert prepared.get_nb_trainable_parameters() == (trainable, total)


def tiny_classifier(folder: Path) -> PreTrainedModel:
    torch.manual_seed(0)  # the head is fresh: seed it so every base() is the same model
    return load_classifier(str(folder), LABELS)


def batch(folder: Path) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    features = [{"input_ids": ids} for ids in tokenizer(TEXTS)["input_ids"]]
    padded = DataCollatorWithPadding(tokenizer)(features)  # uneven lengths: real padding
    return {**padded, "labels": torch.tensor([1, 0, 1, 0])}


def train_steps(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int) -> None:
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()


def snapshot(model: nn.Module) -> Iterator[tuple[str, bool, torch.Tensor]]:
    return ((n, p.requires_grad, p.detach().clone()) for n, p in model.named_parameters())


STEPPED: dict[str, dict[str, Any]] = {
    "prefix": {"method": "prefix"},
    "prompt": {"method": "prompt"},
    "ia3": {"method": "ia3"},
    "lora-dora": {"method": "lora", "lora": {"use_dora": True}},
}


@pytest.mark.parametrize("case", list(STEPPED))
def test_a_step_moves_only_the_trainable_parameters(case: str, tiny_model: Path) -> None:
    train = TrainConfig(**STEPPED[case])
    model = get_method(train.method).prepare(tiny_classifier(tiny_model), train)
    before = list(snapshot(model))
    # Two steps: LoRA's B starts at zero, so A has no gradient until B has moved once.
    train_steps(model, batch(tiny_model), steps=2)
    after = dict(model.named_parameters())
    frozen = [n for n, trainable, _ in before if not trainable]
    assert frozen and any(trainable for _, trainable, _ in before)
    for name, trainable, old in before:
        moved = not torch.equal(after[name].detach(), old)
        assert moved == trainable, f"{name}: trainable={trainable}, moved={moved}"


RELOADED: dict[str, dict[str, Any]] = {
    "lora": {"method": "lora"},
    "lora-rslora": {"method": "lora", "lora": {"use_rslora": True}},
    "lora-dora": {"method": "lora", "lora": {"use_dora": True}},
    "prefix": {"method": "prefix"},
    "prefix-projected": {"method": "prefix", "prefix": {"projection": True}},
    "prompt": {"method": "prompt"},
    "ia3": {"method": "ia3"},
}


@pytest.mark.parametrize("case", list(RELOADED))
def test_checkpoint_reloads_to_the_same_logits(case: str, tiny_model: Path, tmp_path: Path) -> None:
    train = TrainConfig(**RELOADED[case])
    method = get_method(train.method)
    model = method.prepare(tiny_classifier(tiny_model), train)
    inputs = batch(tiny_model)
    train_steps(model, inputs, steps=3)
    method.save(model, tmp_path)
    reloaded = method.load(tmp_path, lambda: tiny_classifier(tiny_model))
    logits = []
    for module in (model, reloaded):
        module.eval()
        with torch.inference_mode():
            logits.append(module(**inputs).logits)
    assert torch.equal(logits[0], logits[1])


def test_peft_refusals_name_the_config_key(tiny_model: Path) -> None:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cases: list[tuple[dict[str, Any], PreTrainedModel | None, str]] = [
        (
            {"method": "lora", "lora": {"target_modules": ["nope"]}},
            None,
            r"lora.target_modules.*nope.*query",
        ),
        ({"method": "ia3", "ia3": {"target_modules": ["nope"]}}, None, r"ia3.target_modules.*nope"),
        (
            {"method": "ia3", "ia3": {"target_modules": ["key"], "feedforward_modules": ["query"]}},
            None,
            r"ia3.feedforward_modules: \['query'\] are not among",
        ),
        (
            {"method": "prefix", "gradient_checkpointing": True},
            None,
            r"train.gradient_checkpointing: cannot be combined with prefix",
        ),
        (
            {"method": "prefix"},
            DistilBertForSequenceClassification(
                DistilBertConfig(vocab_size=50, dim=32, n_layers=1, n_heads=2, hidden_dim=64)
            ),
            r"train.method: prefix needs a model that accepts past_key_values",
        ),
    ]
    for train, model, message in cases:
        config = TrainConfig(**train)
        with pytest.raises(ConfigError, match=message):
            get_method(config.method).prepare(model or tiny_classifier(tiny_model), config)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_virtual_tokens_past_the_position_table_name_the_keys(
    method: str, tiny_model: Path
) -> None:
    config = TrainConfig(method=method, **{method: {"virtual_tokens": 100}})  # type: ignore[arg-type]
    model = get_method(method).prepare(tiny_classifier(tiny_model), config)
    inputs = {"input_ids": torch.ones(1, 29, dtype=torch.long)}  # 100 + 29 > 128 positions
    with pytest.raises(
        ConfigError, match=rf"train.{method}.virtual_tokens.*128 positions.*max_length"
    ):
        model(**inputs)


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prompt_learning_trials_run_through_the_trainer(
    method: str, tiny_model: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    config = parse_config(
        {
            "name": "unit",
            "model": {"name_or_path": str(tiny_model)},
            "data": {"train": str(sentiment_csv), "test_fraction": 0.2, "max_length": 32},
            "train": {"method": method, "epochs": 1, "batch_size": 16, "learning_rate": 3e-2},
        }
    )
    outcome = run_trial(
        config,
        trial_request(tmp_path),
    )
    assert 0.0 <= outcome.metrics["eval_accuracy"] <= 1.0
    assert "test_accuracy" in outcome.metrics  # the saved checkpoint reloaded and scored
    assert 0 < outcome.trainable_parameters < outcome.total_parameters / 10
    assert "adapter_model.safetensors" in (outcome.checkpoint_sha256 or {})


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_padding_is_masked_past_the_virtual_tokens(method: str, tiny_model: Path) -> None:
    # The mask peft widens by the virtual tokens must still hide the padding: a text scores the
    # same alone as padded in a batch with longer ones.
    model = get_method(method).prepare(tiny_classifier(tiny_model), TrainConfig(method=method))
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    collate = DataCollatorWithPadding(tokenizer)
    encoded = [{"input_ids": ids} for ids in tokenizer(TEXTS)["input_ids"]]
    with torch.inference_mode():
        together = model(**collate(encoded)).logits
        alone = torch.cat([model(**collate([e])).logits for e in encoded])
    assert torch.allclose(together, alone, atol=1e-5)
