"""Running a checkpoint on texts: labels and class probabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from tunefleet.trainers.checkpoint import Manifest, load_checkpoint


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]


def batched_logits(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    texts: Sequence[str],
    *,
    max_length: int,
    batch_size: int = 32,
) -> NDArray[np.float32]:
    collate = DataCollatorWithPadding(tokenizer)
    device = next(model.parameters()).device
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(
                list(texts[start : start + batch_size]), truncation=True, max_length=max_length
            )
            features = [{"input_ids": ids} for ids in encoded["input_ids"]]
            batch = {k: v.to(device) for k, v in collate(features).items()}
            chunks.append(model(**batch).logits.float().cpu().numpy())
    if not chunks:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate(chunks)


class Predictor:
    """A loaded checkpoint; ``predict`` is safe to call repeatedly (the model stays loaded)."""

    def __init__(
        self, model: nn.Module, tokenizer: PreTrainedTokenizerBase, manifest: Manifest
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.manifest = manifest

    @classmethod
    def from_checkpoint(cls, folder: str | Path) -> Predictor:
        return cls(*load_checkpoint(Path(folder)))

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.manifest.label_names

    def logits(self, texts: Sequence[str]) -> NDArray[np.float32]:
        return batched_logits(
            self.model, self.tokenizer, texts, max_length=self.manifest.max_length
        )

    def predict(self, texts: Sequence[str]) -> list[Prediction]:
        logits = self.logits(texts)
        if len(logits) == 0:
            return []
        shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probs = shifted / shifted.sum(axis=-1, keepdims=True)
        names = self.label_names
        return [
            Prediction(
                label=names[int(row.argmax())],
                probabilities={n: float(p) for n, p in zip(names, row, strict=True)},
            )
            for row in probs
        ]
