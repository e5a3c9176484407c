"""Tokenised datasets, cached on disk and shared by every trial with the same tokenizer, data and
``max_length`` (tokenising is repeated work otherwise: a sweep's trials all read the same data)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from tunefleet.trainers.data import Table


class EncodedDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Token ids and class ids; padding happens per batch in the collator."""

    def __init__(self, input_ids: Sequence[Sequence[int]], labels: Sequence[int] | None) -> None:
        self.input_ids = [list(ids) for ids in input_ids]
        self.labels = list(labels) if labels is not None else None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.input_ids[index]}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        return item


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """What decides the token ids: vocabulary, normaliser, pre-tokeniser, model. Not the
    truncation/padding state, which every call rewrites (it would make each trial miss)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        state = json.dumps(tokenizer.get_vocab(), sort_keys=True)
    else:
        parsed = json.loads(backend.to_str())
        parsed.pop("truncation", None)
        parsed.pop("padding", None)
        state = json.dumps(parsed, sort_keys=True)
    return hashlib.sha256(state.encode()).hexdigest()


def encode(
    table: Table,
    *,
    tokenizer: PreTrainedTokenizerBase,
    label_names: Sequence[str],
    max_length: int,
    cache_dir: Path | None,
) -> EncodedDataset:
    """Tokenise ``table``; with ``cache_dir``, reuse an earlier trial's identical tokenisation."""
    index = {name: i for i, name in enumerate(label_names)}
    labels = [index[label] for label in table.labels]
    if cache_dir is None:
        return EncodedDataset(_tokenise(tokenizer, table.texts, max_length), labels)
    key = hashlib.sha256(
        f"{tokenizer_fingerprint(tokenizer)}|{table.fingerprint()}|{max_length}".encode()
    ).hexdigest()[:32]
    path = cache_dir / f"{key}.json"
    if path.is_file():
        return EncodedDataset(json.loads(path.read_text()), labels)
    ids = _tokenise(tokenizer, table.texts, max_length)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: workers sharing the cache never read half a file.
    handle, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(ids, out)
    os.replace(tmp, path)
    return EncodedDataset(ids, labels)


def _tokenise(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]
