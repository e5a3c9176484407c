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

IGNORE_INDEX = -100
"""Class id of a row whose label training must not see (cross-entropy's ``ignore_index``)."""
SOURCE_DOMAIN, TARGET_DOMAIN = 0, 1
"""Domain ids of ``domain_labels``, the domain classifier's targets."""


class EncodedDataset(torch.utils.data.Dataset[dict[str, Any]]):
    """Token ids, class ids and, for domain-adversarial training, domain ids; padding happens per
    batch in the collator."""

    def __init__(
        self,
        input_ids: Sequence[Sequence[int]],
        labels: Sequence[int] | None,
        domain_labels: Sequence[int] | None = None,
    ) -> None:
        self.input_ids = [list(ids) for ids in input_ids]
        self.labels = list(labels) if labels is not None else None
        self.domain_labels = list(domain_labels) if domain_labels is not None else None

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {"input_ids": self.input_ids[index]}
        if self.labels is not None:
            item["labels"] = self.labels[index]
        if self.domain_labels is not None:
            item["domain_labels"] = self.domain_labels[index]
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
    ids = _token_ids(table.texts, table.fingerprint(), tokenizer, max_length, cache_dir)
    return EncodedDataset(ids, labels)


def encode_unlabelled(
    texts: Sequence[str],
    *,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    cache_dir: Path | None,
) -> EncodedDataset:
    """Rows trained on without their labels (target-domain rows): built from texts alone, each
    row's class id is IGNORE_INDEX, so no loss can read a label it was never given."""
    content = hashlib.sha256(json.dumps(list(texts), ensure_ascii=False).encode()).hexdigest()
    ids = _token_ids(texts, content, tokenizer, max_length, cache_dir)
    return EncodedDataset(ids, [IGNORE_INDEX] * len(ids))


def domain_mixture(source: EncodedDataset, target: EncodedDataset) -> EncodedDataset:
    """Source rows then target rows, each with its domain id; the trainer's sampler mixes them."""
    assert source.labels is not None and target.labels is not None
    return EncodedDataset(
        source.input_ids + target.input_ids,
        source.labels + target.labels,
        [SOURCE_DOMAIN] * len(source) + [TARGET_DOMAIN] * len(target),
    )


def _token_ids(
    texts: Sequence[str],
    content: str,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    cache_dir: Path | None,
) -> list[list[int]]:
    """Token ids of ``texts`` (``content`` fingerprints them), from the cache when it has them."""
    if cache_dir is None:
        return _tokenise(tokenizer, texts, max_length)
    key = hashlib.sha256(
        f"{tokenizer_fingerprint(tokenizer)}|{content}|{max_length}".encode()
    ).hexdigest()[:32]
    path = cache_dir / f"{key}.json"
    if path.is_file():
        cached: list[list[int]] = json.loads(path.read_text())
        return cached
    ids = _tokenise(tokenizer, texts, max_length)
    cache_dir.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: workers sharing the cache never read half a file.
    handle, tmp = tempfile.mkstemp(dir=cache_dir, suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(ids, out)
    os.replace(tmp, path)
    return ids


def _tokenise(
    tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    encoded = tokenizer(list(texts), truncation=True, max_length=max_length)
    return [list(ids) for ids in encoded["input_ids"]]
