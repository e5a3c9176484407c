"""Bottleneck adapters on real (tiny, config-built) models: what trains, identity at start,
checkpoints that hold only the adapters and reload to the same logits, BERT and GPT-2."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import (
    AlbertConfig,
    AlbertForSequenceClassification,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    ElectraConfig,
    ElectraForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedModel,
    RobertaConfig,
    RobertaForSequenceClassification,
    TrainerCallback,
)

from support.trials import trial_request
from tunefleet.config import AdapterConfig, TrainConfig, parse_config
from tunefleet.errors import CheckpointError, ConfigError
from tunefleet.trainers.checkpoint import load_checkpoint
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.methods.adapter import CONFIG, WEIGHTS, Adapted, trained_names
from tunefleet.trainers.predict import batched_logits
from tunefleet.trainers.run import run_trial

ASSETS = Path(__file__).resolve().parents[2] / "assets"
TEXTS = ["the food was wonderful", "never again, awful", "fine, I guess", "great staff and view"]


def train_config(placement: str = "houlsby", size: int = 64, **adapter: Any) -> TrainConfig:
    return TrainConfig(
        method="adapter", adapter=AdapterConfig(placement=placement, size=size, **adapter)
    )


def classifier(folder: Path) -> PreTrainedModel:
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2)


def batch(folder: Path) -> dict[str, torch.Tensor]:
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = tokenizer(TEXTS, padding=True, truncation=True, max_length=32, return_tensors="pt")
    # No token_type_ids: GPT-2 would add a token-type embedding for them.
    return {
        "input_ids": encoded["input_ids"],
        "attention_mask": encoded["attention_mask"],
        "labels": torch.tensor([1, 0, 0, 1]),
    }


def optimizer_steps(model: nn.Module, inputs: dict[str, torch.Tensor], steps: int) -> None:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    model.eval()


def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(**{k: v for k, v in inputs.items() if k != "labels"}).logits


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide GPT-2 classifier with the committed (WordPiece) tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    config = GPT2Config(
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=128,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        num_labels=2,
    )
    torch.manual_seed(0)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(("placement", "adapters_per_layer"), [("houlsby", 2), ("pfeiffer", 1)])
def test_bert_base_trains_exactly_the_analytic_parameter_count(
    placement: str, adapters_per_layer: int
) -> None:
    # Meta tensors: the real BERT-base module tree, counted without allocating 110M weights.
    with torch.device("meta"):
        model = BertForSequenceClassification(BertConfig(num_labels=2))
    before = sum(p.numel() for p in model.parameters())
    layers, hidden, size, labels = 12, 768, 64, 2
    per_adapter = (hidden * size + size) + (size * hidden + hidden)  # down + up, with biases
    adapters = layers * adapters_per_layer * per_adapter
    # Two LayerNorms per block plus the embeddings' one, weight and bias each.
    layer_norms = (layers * 2 + 1) * 2 * hidden
    # The head is the classifier only: the pooler is part of the pretrained body and stays
    # frozen (as in google-research/adapter-bert, whose trained "head" is the output layer).
    head = hidden * labels + labels
    expected = adapters + layer_norms + head

    prepared = get_method("adapter").prepare(model, train_config(placement))

    trainable = sum(p.numel() for p in prepared.parameters() if p.requires_grad)
    total = sum(p.numel() for p in prepared.parameters())
    assert sum(isinstance(m, Adapted) for m in prepared.modules()) == layers * adapters_per_layer
    assert (trainable, total) == (expected, before + adapters)
    assert not any(p.requires_grad for p in prepared.bert.pooler.parameters())
    share = 100 * trainable / total
    print(
        f"BERT-base {placement}-{size}: {trainable:,} of {total:,} parameters train ({share:.2f}%)"
    )
    assert expected == {"houlsby": 2_419_202, "pfeiffer": 1_229_570}[placement]


def test_one_step_moves_every_trainable_parameter_and_no_frozen_one(tiny_model: Path) -> None:
    model = get_method("adapter").prepare(classifier(tiny_model), train_config())
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(trained_names(model))
    assert any(".adapter." in n for n in trainable) and "classifier.weight" in trainable

    optimizer_steps(model, batch(tiny_model), steps=1)

    for name, param in model.named_parameters():
        unchanged = torch.equal(param, before[name])
        assert unchanged != (name in trainable), name


def test_adapted_model_starts_as_the_pretrained_one(tiny_model: Path) -> None:
    model, inputs = classifier(tiny_model), batch(tiny_model)
    plain = logits(model, inputs)
    adapted = logits(get_method("adapter").prepare(model, train_config()), inputs)
    assert torch.allclose(plain, adapted, atol=1e-4, rtol=0)


def test_trial_checkpoint_holds_only_adapters_and_reloads_exactly(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    class KeepModel(TrainerCallback):
        model: nn.Module | None = None

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.model = kwargs["model"]

    config = parse_config(
        {
            "name": "unit",
            "model": {"name_or_path": str(tiny_model)},
            "data": {"train": str(sentiment_csv), "test_fraction": 0.2, "max_length": 32},
            # One epoch: its evaluation is the best, so the checkpoint is the final model.
            "train": {
                "method": "adapter",
                "epochs": 1,
                "learning_rate": 3e-3,
                "adapter": {"size": 8},
            },
        }
    )
    keep = KeepModel()
    outcome = run_trial(
        config,
        trial_request(tmp_path, callbacks=[keep]),
    )
    assert keep.model is not None and {"test_accuracy", "test_loss"} <= set(outcome.metrics)
    trained = keep.model.eval()
    folder = tmp_path / "ckpt"
    reloaded, tokenizer, manifest = load_checkpoint(folder)

    assert manifest.method == "adapter"
    assert torch.equal(
        torch.from_numpy(batched_logits(trained, tokenizer, TEXTS, max_length=32)),
        torch.from_numpy(batched_logits(reloaded, tokenizer, TEXTS, max_length=32)),
    )
    saved = load_file(folder / WEIGHTS)
    assert set(saved) == set(trained_names(trained))
    assert all(".adapter." in k or ".LayerNorm." in k or k.startswith("classifier.") for k in saved)
    assert sum(t.numel() for t in saved.values()) == outcome.trainable_parameters
    assert not (folder / "model.safetensors").exists() and (folder / CONFIG).is_file()
    assert (folder / WEIGHTS).stat().st_size < (
        tiny_model / "model.safetensors"
    ).stat().st_size / 10


@pytest.mark.parametrize("placement", ["houlsby", "pfeiffer"])
def test_gpt2_round_trip(tmp_path: Path, tiny_gpt2: Path, placement: str) -> None:
    method, inputs = get_method("adapter"), batch(tiny_gpt2)
    model = method.prepare(
        classifier(tiny_gpt2), train_config(placement, size=8, activation="gelu")
    )
    sites = [n for n, m in model.named_modules() if isinstance(m, Adapted)]
    kinds = ("attn", "mlp") if placement == "houlsby" else ("mlp",)
    assert sites == [f"transformer.h.{i}.{kind}.c_proj" for i in range(2) for kind in kinds]
    optimizer_steps(model, inputs, steps=3)
    trained = logits(model, inputs)
    method.save(model, tmp_path)

    reloaded = method.load(tmp_path, lambda: classifier(tiny_gpt2))

    assert not reloaded.training and torch.equal(logits(reloaded, inputs), trained)
    assert not torch.equal(logits(classifier(tiny_gpt2), inputs), trained)
    keys = set(load_file(tmp_path / WEIGHTS))
    assert "score.weight" in keys and all(
        ".adapter." in k or ".ln_" in k or k == "score.weight" for k in keys
    )


def test_load_refuses_missing_and_unexpected_tensors(tmp_path: Path, tiny_gpt2: Path) -> None:
    method = get_method("adapter")
    method.save(method.prepare(classifier(tiny_gpt2), train_config(size=4)), tmp_path)
    tensors = load_file(tmp_path / WEIGHTS)
    dropped = next(k for k in tensors if ".adapter." in k)
    tensors.pop(dropped)
    tensors["transformer.wte.weight"] = torch.zeros(1)
    save_file(tensors, str(tmp_path / WEIGHTS))
    with pytest.raises(CheckpointError, match=rf"missing {dropped}.*unexpected transformer\.wte"):
        method.load(tmp_path, lambda: classifier(tiny_gpt2))


def _tiny(
    config_class: type[Any], model_class: type[PreTrainedModel], **sizes: Any
) -> Callable[[], PreTrainedModel]:
    return lambda: model_class(config_class(vocab_size=99, num_labels=2, **sizes))


BERT_SIZES = {
    "hidden_size": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 64,
}


@pytest.mark.parametrize(
    "build",
    [
        _tiny(BertConfig, BertForSequenceClassification, **BERT_SIZES),
        _tiny(RobertaConfig, RobertaForSequenceClassification, **BERT_SIZES),
        _tiny(ElectraConfig, ElectraForSequenceClassification, embedding_size=16, **BERT_SIZES),
        _tiny(
            DistilBertConfig,
            DistilBertForSequenceClassification,
            dim=16,
            n_layers=2,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=64,
        ),
    ],
    ids=["bert", "roberta", "electra", "distilbert"],
)
def test_other_encoder_families_get_two_adapters_per_block(
    build: Callable[[], PreTrainedModel],
) -> None:
    torch.manual_seed(0)
    model = build()
    inputs = {"input_ids": torch.randint(5, 99, (2, 7))}
    plain = logits(model, inputs)
    adapted = get_method("adapter").prepare(model, train_config(size=4, activation="tanh"))
    assert sum(isinstance(m, Adapted) for m in adapted.modules()) == 4
    assert torch.allclose(plain, logits(adapted, inputs), atol=1e-4, rtol=0)


def test_unknown_architecture_is_a_config_error_naming_what_is_supported() -> None:
    model = AlbertForSequenceClassification(
        AlbertConfig(
            vocab_size=99,
            embedding_size=8,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
        )
    )
    with pytest.raises(ConfigError) as info:
        get_method("adapter").prepare(model, train_config())
    ((where, what),) = info.value.problems
    assert where == "train.method"
    assert all(s in what for s in ("model.name_or_path", "'albert'", "bert", "gpt2"))
