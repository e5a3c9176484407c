"""Data reading, splitting and the shared tokenisation cache."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tunefleet.config import DataConfig
from tunefleet.trainers.data import Table, label_set, load_splits, stratified_split
from tunefleet.trainers.metrics import classification_metrics


def test_split_is_stratified_disjoint_and_seeded(sentiment_csv: Path) -> None:
    splits = load_splits(DataConfig(train=sentiment_csv, eval_fraction=0.25, test_fraction=0.25))
    assert splits.test is not None
    sizes = [len(splits.train), len(splits.eval), len(splits.test)]
    assert sum(sizes) == 160
    for table in (splits.train, splits.eval, splits.test):
        counts = Counter(table.labels)
        assert abs(counts["0"] - counts["1"]) <= 1  # the source is balanced, so each split is
    texts = [set(t.texts) for t in (splits.train, splits.eval, splits.test)]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    again = load_splits(DataConfig(train=sentiment_csv, eval_fraction=0.25, test_fraction=0.25))
    assert again == splits
    other = load_splits(
        DataConfig(train=sentiment_csv, eval_fraction=0.25, test_fraction=0.25, split_seed=1)
    )
    assert other.eval.texts != splits.eval.texts


def test_rare_class_keeps_a_training_row() -> None:
    table = Table(("a", "b", "c", "d", "e"), ("x", "x", "x", "y", "y"))
    kept, held = stratified_split(table, 0.9, 0)
    assert set(kept.labels) == {"x", "y"} and set(held.labels) == {"x", "y"}


def test_integer_labels_sort_numerically() -> None:
    assert label_set(("10", "2", "1")) == ("1", "2", "10")
    assert label_set(("spam", "ham")) == ("ham", "spam")


def test_metrics_match_a_reference_implementation() -> None:
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(200, 4))
    labels = rng.integers(0, 4, size=200)
    ours = classification_metrics(logits, labels)
    predicted = logits.argmax(-1)
    assert ours["accuracy"] == pytest.approx(accuracy_score(labels, predicted))
    assert ours["f1"] == pytest.approx(f1_score(labels, predicted, average="macro"))


def test_token_cache_is_shared_and_exact(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    from transformers import AutoTokenizer

    from tunefleet.trainers.tokens import encode

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    splits = load_splits(DataConfig(train=sentiment_csv))
    first = encode(
        splits.train,
        tokenizer=tokenizer,
        label_names=splits.label_names,
        max_length=16,
        cache_dir=tmp_path,
    )
    cached = list(tmp_path.glob("*.json"))
    assert len(cached) == 1

    class Refuses:
        """A tokenizer that fails if asked to tokenise: a cache hit must not ask."""

        backend_tokenizer = tokenizer.backend_tokenizer

        def __call__(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("tokenised again despite a cached copy")

    second = encode(
        splits.train,
        tokenizer=Refuses(),
        label_names=splits.label_names,  # type: ignore[arg-type]
        max_length=16,
        cache_dir=tmp_path,
    )
    assert second.input_ids == first.input_ids and second.labels == first.labels
    assert all(len(ids) <= 16 for ids in first.input_ids)
    encode(
        splits.train,
        tokenizer=tokenizer,
        label_names=splits.label_names,
        max_length=32,
        cache_dir=tmp_path,
    )
    assert len(list(tmp_path.glob("*.json"))) == 2  # another max_length is another entry
