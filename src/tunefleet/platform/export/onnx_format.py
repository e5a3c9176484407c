"""``--format onnx``: ``model.onnx`` (inputs as the tokenizer names them, batch and sequence axes
dynamic, output ``logits``), run by onnxruntime, beside the tokenizer and ``config.json`` (the
labels). Any method exports: the graph is traced from the module ``load_checkpoint`` builds, with
LoRA/IA3 merged first so the graph holds plain matrices.

torch's TorchScript-based exporter (``dynamo=False``) is used: it needs only the ``onnx`` package,
where the dynamo exporter also needs onnxscript; both come with ``pip install 'tunefleet[onnx]'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from tunefleet.errors import TunefleetError
from tunefleet.platform.export.check import Logits
from tunefleet.trainers.checkpoint import Manifest, load_checkpoint
from tunefleet.trainers.merge import STANDALONE, plain

GRAPH = "model.onnx"
OPSET = 17
INSTALL = "pip install 'tunefleet[onnx]'"

USAGE = """
import onnxruntime
from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained("{dest}")
session = onnxruntime.InferenceSession("{dest}/model.onnx")
names = [i.name for i in session.get_inputs()]
batch = tokenizer(["the food was wonderful"], truncation=True, padding=True, return_tensors="np")
logits = session.run(["logits"], {{n: batch[n] for n in names}})[0]
"""


def load_onnxruntime() -> ModuleType:
    """The onnxruntime module, or an error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise TunefleetError(f"--format onnx needs onnxruntime: {INSTALL}") from None
    module: ModuleType = onnxruntime
    return module


def _require_onnx() -> None:
    try:
        import onnx  # noqa: F401  (torch's exporter serialises through it)
    except ImportError:
        raise TunefleetError(f"--format onnx needs the onnx package: {INSTALL}") from None


class _Logits(nn.Module):
    """The classifier as a function of positional tensors (named ``names``) to its logits."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)

    def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.model(**dict(zip(self.names, tensors, strict=True))).logits
        return logits


def input_names(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """The tensors the tokenizer gives (``token_type_ids`` only where it makes them)."""
    sample = tokenizer(["a"], return_tensors="np")
    return [name for name in tokenizer.model_input_names if name in sample]


def write(checkpoint: Path, staging: Path, manifest: Manifest, probe: Sequence[str]) -> None:
    load_onnxruntime()
    _require_onnx()
    staging.mkdir(parents=True, exist_ok=True)
    model, tokenizer, _ = load_checkpoint(checkpoint)
    if STANDALONE.get(manifest.method) == "merged":
        model = plain(model, method=manifest.method)
    names = input_names(tokenizer)
    # Two padded rows of different lengths: the traced graph must not bake either in.
    batch = tokenizer(
        list(probe[:2]),
        truncation=True,
        max_length=manifest.max_length,
        padding=True,
        return_tensors="pt",
    )
    wrapper = _Logits(model, names).eval()  # exporting restores the wrapper's mode: eval
    axes = {name: {0: "batch", 1: "sequence"} for name in names}
    with warnings.catch_warnings(), torch.no_grad():
        # The tracer warns of every Python branch on a shape; whether one baked a size into the
        # graph is what the check finds out, on a batch of another size and length.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(batch[name] for name in names),
            str(staging / GRAPH),
            dynamo=False,
            input_names=names,
            output_names=["logits"],
            dynamic_axes={**axes, "logits": {0: "batch"}},
            opset_version=OPSET,
        )
    tokenizer.save_pretrained(staging)
    config = getattr(model, "config", None)
    if config is not None:
        config.save_pretrained(staging)


def logits(folder: Path, texts: Sequence[str], *, max_length: int, batch_size: int = 32) -> Logits:
    ort = load_onnxruntime()
    session = ort.InferenceSession(str(folder / GRAPH), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(folder)
    names = [i.name for i in session.get_inputs()]
    chunks: list[Any] = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            truncation=True,
            max_length=max_length,
            padding=True,
            return_tensors="np",
        )
        chunks.append(session.run(["logits"], {n: batch[n].astype(np.int64) for n in names})[0])
    return np.concatenate(chunks).astype(np.float32)
