"""trainers.merge: which checkpoints become one plain transformers model; merged ones compute as
the checkpoint does and keep nothing of the adapter, the others are refused naming the export
formats that do hold them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from support.method_checkpoints import PROBE, train_checkpoint
from tunefleet.trainers.checkpoint import MANIFEST, Manifest
from tunefleet.trainers.merge import ELSEWHERE, STANDALONE, NotStandaloneError, standalone_model
from tunefleet.trainers.methods import method_names
from tunefleet.trainers.model import load_classifier
from tunefleet.trainers.predict import Predictor, batched_logits


def test_every_registered_method_says_whether_it_stands_alone() -> None:
    assert set(STANDALONE) == set(method_names())
    assert {name for name, how in STANDALONE.items() if how == "no"} == set(ELSEWHERE)


def manifest_only(folder: Path, method: str) -> Path:
    """A folder holding only a manifest: enough for a refusal, which loads no weights."""
    manifest = Manifest(
        method=method,
        base_model="unused",
        label_names=("0", "1"),
        max_length=32,
        sweep="unit",
        trial=0,
        metric="eval_accuracy",
        value=0.5,
        epoch=1.0,
        params={},
        config={},
        data_sha256="0" * 64,
    )
    folder.mkdir()
    (folder / MANIFEST).write_text(json.dumps(manifest.to_json()))
    return folder


@pytest.mark.parametrize(
    ("method", "formats"),
    [
        ("adapter", "use --format onnx$"),
        ("prefix", "use --format peft or --format onnx$"),
        ("prompt", "use --format peft or --format onnx$"),
    ],
)
def test_methods_that_cannot_merge_are_refused_naming_other_formats(
    method: str, formats: str, tmp_path: Path
) -> None:
    folder = manifest_only(tmp_path / "ckpt", method)
    with pytest.raises(NotStandaloneError, match=rf"method '{method}' cannot be .*{formats}"):
        standalone_model(folder)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "ia3", "dann", "full"])
def test_standalone_model_is_plain_and_computes_as_the_checkpoint(
    method: str, tiny_model: Path, sentiment_csv: Path, tmp_path: Path
) -> None:
    checkpoint = train_checkpoint(method, model=tiny_model, data=sentiment_csv, folder=tmp_path)
    model = standalone_model(checkpoint)
    reference = load_classifier(str(tiny_model), ("0", "1"))
    assert type(model) is type(reference)
    # Exactly a plain classifier's parameters: no LoRA/IA3 tensors, no wrapped base layers, no
    # domain classifier.
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in reference.named_parameters()]
    if method in ("lora", "ia3"):
        adapted = model.bert.encoder.layer[0].attention.self.value.weight
        pretrained = reference.bert.encoder.layer[0].attention.self.value.weight
        assert not torch.equal(adapted, pretrained), "the adapter was dropped, not merged"
    predictor = Predictor.from_checkpoint(checkpoint)
    merged = batched_logits(model, predictor.tokenizer, PROBE, max_length=32)
    np.testing.assert_allclose(merged, predictor.logits(PROBE), rtol=0, atol=1e-5)
