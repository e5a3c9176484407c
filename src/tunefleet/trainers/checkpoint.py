"""Self-describing checkpoint folders: weights (safetensors), config, tokenizer,
``tunefleet.json`` (what made it) and ``evaluation.json`` (how it scored when chosen), plus the
sha256 of every file so promotion can verify it."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from tunefleet.errors import CheckpointError, NotFoundError

MANIFEST = "tunefleet.json"
EVALUATION = "evaluation.json"
"""The report (``evaluation_report``) of the evaluation the checkpoint was chosen at."""
FORMAT = 1
CONFIG = "config.json"
WEIGHT_KEYS = ("dtype", "quantization")
"""The ``model`` settings a reload needs from the manifest's config (older checkpoints lack
them: float32, unquantized)."""


@dataclass(frozen=True)
class Manifest:
    """The contents of ``tunefleet.json``."""

    method: str
    base_model: str
    label_names: tuple[str, ...]
    max_length: int
    sweep: str
    trial: int
    metric: str
    value: float
    epoch: float
    params: dict[str, Any]
    config: dict[str, Any]
    data_sha256: str

    def to_json(self) -> dict[str, Any]:
        data = {"format": FORMAT, **self.__dict__}
        data["label_names"] = list(self.label_names)
        return data

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = folder / MANIFEST
        if not path.is_file():
            raise NotFoundError(f"{folder} is not a tunefleet checkpoint (no {MANIFEST})")
        data = json.loads(path.read_text())
        data.pop("format", None)
        data["label_names"] = tuple(data["label_names"])
        return cls(**data)


def write_checkpoint(
    folder: Path,
    *,
    model: nn.Module,
    save: Any,
    tokenizer: PreTrainedTokenizerBase,
    manifest: Manifest,
    evaluation: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Replace ``folder`` with a new checkpoint; returns {relative path: sha256}.

    Written to a sibling folder and swapped in, so a crash mid-write leaves the previous best
    checkpoint intact rather than half of each. ``evaluation`` (the report of the evaluation
    that chose it) is written as ``evaluation.json`` before hashing, so ``verify`` covers it.
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    save(model, staging)
    _describe_model(model, staging)
    _save_tokenizer(tokenizer, staging, max_length=manifest.max_length)
    (staging / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2, default=str))
    if evaluation is not None:
        (staging / EVALUATION).write_text(json.dumps(evaluation, indent=2))
    hashes = hash_folder(staging)
    old = folder.with_name(f".{folder.name}-old")
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)
    return hashes


def _describe_model(model: nn.Module, folder: Path) -> None:
    """The model's ``config.json`` beside a checkpoint that holds only what its method trained
    (peft, adapters): the folder then says itself which architecture, labels and
    ``pad_token_id`` it was trained with. A method's own ``config.json`` is left as it wrote it."""
    config = getattr(model, "config", None)  # a PeftModel passes this on to its base model
    if isinstance(config, PreTrainedConfig) and not (folder / CONFIG).exists():
        config.save_pretrained(folder)


def _save_tokenizer(tokenizer: PreTrainedTokenizerBase, folder: Path, *, max_length: int) -> None:
    """The tokenizer with its padding token (and side) as trained, and ``model_max_length`` =
    ``data.max_length``, so plain transformers (``pipeline(..., truncation=True)``) cuts texts
    where training did."""
    trained_with = tokenizer.model_max_length
    tokenizer.model_max_length = max_length
    try:
        tokenizer.save_pretrained(folder)
    finally:
        tokenizer.model_max_length = trained_with


def hash_folder(folder: Path) -> dict[str, str]:
    hashes: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        hashes[path.relative_to(folder).as_posix()] = digest.hexdigest()
    return hashes


def verify(folder: Path, expected: Mapping[str, str]) -> None:
    """CheckpointError naming each file that is missing, extra or changed since it was written."""
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint folder {folder} is missing")
    actual = hash_folder(folder)
    problems = [f"missing {name}" for name in expected if name not in actual]
    problems += [f"unexpected {name}" for name in actual if name not in expected]
    problems += [
        f"changed {name}" for name in expected if name in actual and actual[name] != expected[name]
    ]
    if problems:
        raise CheckpointError(
            f"checkpoint {folder} does not match its recorded hashes: " + "; ".join(problems)
        )


def load_checkpoint(
    folder: Path, *, base_model: str | None = None, token: str | None = None
) -> tuple[nn.Module, PreTrainedTokenizerBase, Manifest]:
    """The trained module (in eval mode), its tokenizer and manifest. A method whose checkpoint
    is not self-contained is restored onto ``base_model`` (default: the manifest's), loaded in
    the dtype and quantization it trained on, so it computes exactly as it did in training."""
    from tunefleet.config import ModelConfig
    from tunefleet.trainers.methods import get_method
    from tunefleet.trainers.model import load_classifier, load_tokenizer, resolve_model

    manifest = Manifest.read(folder)
    tokenizer = load_tokenizer(str(folder))  # it holds the padding token training used
    weights = ModelConfig.model_validate(
        {k: v for k, v in manifest.config.get("model", {}).items() if k in WEIGHT_KEYS}
    )

    def base() -> PreTrainedModel:
        return load_classifier(
            base_model or resolve_model(manifest.base_model),
            manifest.label_names,
            pad_token_id=tokenizer.pad_token_id,
            token=token,
            dtype=weights.dtype,
            quantization=weights.quantization,
        )

    model = get_method(manifest.method).load(folder, base)
    model.eval()
    return model, tokenizer, manifest
