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
    target_train: Table | None = None
    """Target-domain rows an adapting method (dann) may train on, by their texts only: their
    labels are kept solely because the split was stratified by them."""
    target_eval: Table | None = None
    """Held-out target-domain rows, scored as ``eval_target_*`` by every method."""

    def fingerprint(self) -> str:
        parts = [self.train.fingerprint(), self.eval.fingerprint()]
        parts.append(self.test.fingerprint() if self.test else "")
        # Appended only with domains, so single-domain fingerprints stay what they were.
        for table in (self.target_train, self.target_eval):
            if table is not None:
                parts.append(table.fingerprint())
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
    table, _ = _read_columns(path, key=key, columns=(text_column, label_column), domain_column=None)
    return table


def read_domain_table(
    path: Path, *, key: str, text_column: str, label_column: str, domain_column: str
) -> tuple[Table, tuple[str, ...]]:
    """Rows of ``path`` and each row's domain ("" where the cell is empty)."""
    table, domains = _read_columns(
        path, key=key, columns=(text_column, label_column), domain_column=domain_column
    )
    assert domains is not None
    return table, domains


def _read_columns(
    path: Path, *, key: str, columns: tuple[str, str], domain_column: str | None
) -> tuple[Table, tuple[str, ...] | None]:
    rows = _read_rows(path, key)
    if not rows:
        raise DataError([(key, f"{path} holds no rows")])
    text_column, label_column = columns
    named = [(text_column, "data.text_column"), (label_column, "data.label_column")]
    if domain_column is not None:
        named.append((domain_column, "data.domain_column"))
    present = list(rows[0].keys())
    for column, option in named:
        if column not in present:
            raise DataError(
                [
                    (
                        key,
                        f"{path} has no column {column!r} (named by {option}); "
                        f"its columns: {', '.join(map(str, present))}",
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
    table = Table(tuple(texts), tuple(labels))
    if domain_column is None:
        return table, None
    return table, tuple(str(row.get(domain_column) or "").strip() for row in rows)


def select_domains(
    table: Table,
    domains: tuple[str, ...],
    wanted: list[str],
    *,
    path: Path,
    column: str,
    option: str,
) -> Table:
    """The rows of ``wanted`` domains, in file order; DataError if one of them never occurs."""
    found = sorted(set(domains) - {""})
    missing = [domain for domain in wanted if domain not in found]
    if missing:
        raise DataError(
            [
                (
                    option,
                    f"{path}: domains {missing} do not occur in column {column!r}; "
                    f"domains found: {found}",
                )
            ]
        )
    keep = set(wanted)
    return _take(table, [i for i, domain in enumerate(domains) if domain in keep])


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
    """Read, check and split the data; every refusal names the option and the file.

    With ``data.domain_column``, the source-domain rows of ``data.train`` are split exactly as
    single-domain data is (explicit ``data.eval``/``data.test`` files keep their source-domain
    rows), and its target-domain rows are split, stratified by label, into ``target_train`` and
    a held-out ``target_eval`` of ``eval_fraction``.
    """
    train, target = _read_train(data)
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
    test = _read_held_out(data, data.test, "data.test") if data.test else None
    if test is None and data.test_fraction > 0:
        train, test = stratified_split(train, data.test_fraction, data.split_seed)
    if data.eval:
        evaluation = _read_held_out(data, data.eval, "data.eval")
    else:
        _check_splittable(train, names, data.train)
        train, evaluation = stratified_split(train, data.eval_fraction, data.split_seed + 1)
    target_train = target_eval = None
    if target is not None:
        _check_splittable(target, label_set(target.labels), data.train, which="target-domain ")
        # Its own seed offset: the target split must not mirror the source one row for row.
        target_train, target_eval = stratified_split(
            target, data.eval_fraction, data.split_seed + 2
        )
    for key, table in (
        ("data.eval", evaluation),
        ("data.test", test),
        ("data.target_domains", target_eval),
    ):
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
    return Splits(
        train=train,
        eval=evaluation,
        test=test,
        label_names=names,
        target_train=target_train,
        target_eval=target_eval,
    )


def _read_train(data: DataConfig) -> tuple[Table, Table | None]:
    """(source rows, target rows) of ``data.train``; all rows and None without domains."""
    read = {"text_column": data.text_column, "label_column": data.label_column}
    if data.domain_column is None:
        return read_table(data.train, key="data.train", **read), None
    assert data.source_domains is not None and data.target_domains is not None  # config checks
    table, domains = read_domain_table(
        data.train, key="data.train", domain_column=data.domain_column, **read
    )
    source, target = (
        select_domains(
            table,
            domains,
            wanted,
            path=data.train,
            column=data.domain_column,
            option=f"data.{side}_domains",
        )
        for side, wanted in (("source", data.source_domains), ("target", data.target_domains))
    )
    return source, target


def _read_held_out(data: DataConfig, path: Path, key: str) -> Table:
    """An explicit eval/test file; with domains, only its source-domain rows."""
    read = {"text_column": data.text_column, "label_column": data.label_column}
    if data.domain_column is None:
        return read_table(path, key=key, **read)
    assert data.source_domains is not None
    table, domains = read_domain_table(path, key=key, domain_column=data.domain_column, **read)
    keep = set(data.source_domains)
    rows = [i for i, domain in enumerate(domains) if domain in keep]
    if not rows:
        raise DataError(
            [
                (
                    key,
                    f"{path}: no rows of the source domains {data.source_domains} in column "
                    f"{data.domain_column!r}; domains found: {sorted(set(domains) - {''})}",
                )
            ]
        )
    return _take(table, rows)


def _check_splittable(table: Table, names: tuple[str, ...], path: Path, *, which: str = "") -> None:
    too_small = [n for n in names if table.labels.count(n) < 2]
    if too_small:
        raise DataError(
            [
                (
                    "data.train",
                    f"{path}: classes {too_small} have fewer than 2 {which}"
                    "rows; cannot hold some out for evaluation",
                )
            ]
        )
