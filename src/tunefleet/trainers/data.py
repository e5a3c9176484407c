"""Reading and splitting the text-classification data named by ``data:``.

Pure Python (no torch): ``tunefleet validate`` checks the data with it before anything heavy is
imported. Tokenisation lives in :mod:`tunefleet.trainers.tokens`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from tunefleet.config import DataConfig
from tunefleet.errors import DataError

SUFFIXES = (".csv", ".jsonl")


@dataclass(frozen=True)
class Table:
    """Rows of one split: parallel lists of texts and label strings."""

    texts: tuple[str, ...]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def fingerprint(self) -> str:
        payload = json.dumps([self.texts, self.labels], ensure_ascii=False).encode()
        return hashlib.sha256(payload).hexdigest()


@dataclass(frozen=True)
class Splits:
    train: Table
    eval: Table
    test: Table | None
    label_names: tuple[str, ...]
    """Sorted label set (numerically when every label is an integer); index = class id."""

    def fingerprint(self) -> str:
        parts = [self.train.fingerprint(), self.eval.fingerprint()]
        parts.append(self.test.fingerprint() if self.test else "")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()


def _read_rows(path: Path, key: str) -> list[dict[str, object]]:
    if not path.is_file():
        raise DataError([(key, f"file not found: {path}")])
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            [
                (
                    key,
                    f"{path}: unsupported file type {path.suffix!r}; allowed: "
                    f"{', '.join(SUFFIXES)}",
                )
            ]
        )
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            if path.suffix.lower() == ".csv":
                return list(csv.DictReader(handle))
            return [json.loads(line) for line in handle if line.strip()]
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise DataError([(key, f"{path}: cannot be read as {path.suffix[1:]}: {exc}")]) from None


def read_table(path: Path, *, key: str, text_column: str, label_column: str) -> Table:
    """Rows of ``path``; DataError names ``key`` (e.g. ``data.train``), the file and the column."""
    rows = _read_rows(path, key)
    if not rows:
        raise DataError([(key, f"{path} holds no rows")])
    columns = list(rows[0].keys())
    for column, option in ((text_column, "data.text_column"), (label_column, "data.label_column")):
        if column not in columns:
            raise DataError(
                [
                    (
                        key,
                        f"{path} has no column {column!r} (named by {option}); "
                        f"its columns: {', '.join(map(str, columns))}",
                    )
                ]
            )
    texts, labels = [], []
    for line, row in enumerate(rows, start=2):
        text, label = row.get(text_column), row.get(label_column)
        if text is None or label is None or str(label).strip() == "":
            raise DataError(
                [(key, f"{path} row {line}: empty {text_column!r} or {label_column!r}")]
            )
        texts.append(str(text))
        labels.append(str(label).strip())
    return Table(tuple(texts), tuple(labels))


def label_set(labels: tuple[str, ...]) -> tuple[str, ...]:
    unique = set(labels)
    if all(_is_int(x) for x in unique):
        return tuple(sorted(unique, key=int))
    return tuple(sorted(unique))


def _is_int(value: str) -> bool:
    try:
        int(value)
    except ValueError:
        return False
    return True


def stratified_split(table: Table, fraction: float, seed: int) -> tuple[Table, Table]:
    """(kept, held out): ``fraction`` of each class, at least one row per class, seeded."""
    by_label: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(table.labels):
        by_label[label].append(index)
    rng = random.Random(seed)
    held: list[int] = []
    for label in sorted(by_label):
        indices = by_label[label]
        rng.shuffle(indices)
        count = round(len(indices) * fraction)
        held.extend(indices[: max(1, min(count, len(indices) - 1))])
    held_set = set(held)
    kept = [i for i in range(len(table)) if i not in held_set]
    return _take(table, kept), _take(table, sorted(held))


def _take(table: Table, indices: list[int]) -> Table:
    return Table(tuple(table.texts[i] for i in indices), tuple(table.labels[i] for i in indices))


def load_splits(data: DataConfig) -> Splits:
    """Read, check and split the data; every refusal names the option and the file."""
    read = {"text_column": data.text_column, "label_column": data.label_column}
    train = read_table(data.train, key="data.train", **read)
    names = label_set(train.labels)
    if len(names) < 2:
        raise DataError(
            [
                (
                    "data.label_column",
                    f"{data.train}: column {data.label_column!r} has "
                    f"one class ({names[0]!r}); need at least 2",
                )
            ]
        )
    test = read_table(data.test, key="data.test", **read) if data.test else None
    if test is None and data.test_fraction > 0:
        train, test = stratified_split(train, data.test_fraction, data.split_seed)
    if data.eval:
        evaluation = read_table(data.eval, key="data.eval", **read)
    else:
        too_small = [n for n in names if train.labels.count(n) < 2]
        if too_small:
            raise DataError(
                [
                    (
                        "data.train",
                        f"{data.train}: classes {too_small} have fewer than 2 "
                        "rows; cannot hold some out for evaluation",
                    )
                ]
            )
        train, evaluation = stratified_split(train, data.eval_fraction, data.split_seed + 1)
    for key, table in (("data.eval", evaluation), ("data.test", test)):
        unknown = sorted(set(table.labels) - set(names)) if table else []
        if unknown:
            raise DataError(
                [
                    (
                        key,
                        f"labels {unknown} do not occur in the training data "
                        f"(training labels: {list(names)})",
                    )
                ]
            )
    return Splits(train=train, eval=evaluation, test=test, label_names=names)
