"""Every method on the tiny decoders (GPT-2, Llama and Qwen2 shapes, tokenizers without a pad
token): a few steps move exactly the trainable parameters, a checkpoint reloads to exactly the
same logits, and a text scores the same alone as padded in a batch of much longer texts (for the
encoder too), which is where a decoder's head reading the wrong position would show."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tunefleet.config import METHODS, TrainConfig
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.model import load_classifier, load_tokenizer

LABELS = ("0", "1")
TEXTS = [
    "the food was wonderful",
    "never again, awful service and cold soup",
    "fine",
    "a long evening: the starters were late, the mains cold and the bill wrong twice",
]
SHORT = "fine, really"
LONG = [
    "the staff were kind and the view over the harbour at dusk was worth the wait alone",
    "we waited an hour for a table, then another for soup that was cold, salty and small",
]
# Small enough to train in a few steps; the adapter's width does not matter here.
SETTINGS = {
    "adapter": {"size": 8},
    "prompt": {"virtual_tokens": 4},
    "prefix": {"virtual_tokens": 4},
}


def settings(method: str) -> TrainConfig:
    return TrainConfig.model_validate({"method": method, **SETTINGS})


def classifier(folder: Path, tokenizer: PreTrainedTokenizerBase) -> PreTrainedModel:
    torch.manual_seed(0)  # the head is fresh: seed it so every base() is the same model
    return load_classifier(str(folder), LABELS, pad_token_id=tokenizer.pad_token_id)


def encode(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> dict[str, Tensor]:
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    return {key: encoded[key] for key in ("input_ids", "attention_mask")}


def train_steps(model: nn.Module, tokenizer: PreTrainedTokenizerBase, method: str) -> None:
    inputs = {**encode(tokenizer, TEXTS), "labels": torch.tensor([1, 0, 1, 0])}
    if get_method(method).uses_target_rows:
        inputs["domain_labels"] = torch.tensor([0, 1, 0, 1])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    # Three steps: LoRA's B starts at zero, so A has no gradient until B has moved once.
    for _ in range(3):
        optimizer.zero_grad()
        model(**inputs).loss.backward()
        optimizer.step()
    model.eval()


def logits(model: nn.Module, inputs: dict[str, Tensor]) -> Tensor:
    with torch.inference_mode():
        out: Tensor = model(**inputs).logits
    return out


def assert_padding_is_invisible(model: nn.Module, tokenizer: PreTrainedTokenizerBase) -> None:
    alone = logits(model, encode(tokenizer, [SHORT])).softmax(-1)
    batch = encode(tokenizer, [SHORT, *LONG])
    assert (batch["attention_mask"][0] == 0).sum() >= 10  # much longer neighbours: real padding
    together = logits(model, batch).softmax(-1)[:1]
    torch.testing.assert_close(alone, together, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_reloads_and_pads_right_on_a_decoder(
    tiny_decoder: Path, method: str, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer(str(tiny_decoder))
    model = get_method(method).prepare(classifier(tiny_decoder, tokenizer), settings(method))
    before = {n: (p.requires_grad, p.detach().clone()) for n, p in model.named_parameters()}
    train_steps(model, tokenizer, method)

    after = dict(model.named_parameters())
    assert any(trainable for trainable, _ in before.values())
    for name, (trainable, old) in before.items():
        moved = not torch.equal(after[name].detach(), old)
        assert moved == trainable, f"{name}: trainable={trainable}, moved={moved}"
    assert_padding_is_invisible(model, tokenizer)

    get_method(method).save(model, tmp_path)
    reloaded = get_method(method).load(tmp_path, lambda: classifier(tiny_decoder, tokenizer))
    reloaded.eval()
    inputs = encode(tokenizer, [SHORT, *LONG])
    assert torch.equal(logits(model, inputs), logits(reloaded, inputs))
    # The reload must also put back whatever makes the head read the right token.
    assert_padding_is_invisible(reloaded, tokenizer)


@pytest.mark.parametrize("method", METHODS)
def test_padding_changes_no_probability_on_the_encoder(tiny_model: Path, method: str) -> None:
    tokenizer = load_tokenizer(str(tiny_model))
    model = get_method(method).prepare(classifier(tiny_model, tokenizer), settings(method))
    train_steps(model, tokenizer, method)
    assert_padding_is_invisible(model, tokenizer)


def test_dann_builds_its_domain_classifier_like_the_head(tiny_decoder: Path) -> None:
    # A model loaded in bfloat16 (model.dtype) takes a domain classifier of the same dtype.
    tokenizer = load_tokenizer(str(tiny_decoder))
    body = classifier(tiny_decoder, tokenizer).to(torch.bfloat16)
    model = get_method("dann").prepare(body, settings("dann"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    inputs = encode(tokenizer, TEXTS)
    out = model(
        **inputs, labels=torch.tensor([1, 0, 1, 0]), domain_labels=torch.tensor([0, 1, 0, 1])
    )
    out.loss.backward()
    assert out.domain_logits.dtype == torch.bfloat16
    assert all(p.grad is not None for p in model.domain_classifier.parameters())


def test_dann_reads_the_last_real_token_the_head_reads(tiny_decoder: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_decoder))
    model = get_method("dann").prepare(classifier(tiny_decoder, tokenizer), settings("dann"))
    model.eval()
    features: list[Tensor] = []
    model.domain_classifier.register_forward_pre_hook(lambda _, args: features.append(args[0]))
    domains = torch.tensor([0, 1, 0])
    with torch.inference_mode():
        model(**encode(tokenizer, [SHORT]), domain_labels=domains[:1])
        model(**encode(tokenizer, [SHORT, *LONG]), domain_labels=domains)
    # The padded row's features are its last real token's, as when it is alone.
    torch.testing.assert_close(features[0][0], features[1][0], rtol=0, atol=1e-5)
