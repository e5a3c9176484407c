"""Domain-aware data: source rows split as single-domain data is, target rows into a training
part (texts only) and a stratified held-out part; refusals name the file, column and domains."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from tunefleet.config import DataConfig
from tunefleet.errors import DataError
from tunefleet.trainers.data import Table, load_splits
from tunefleet.trainers.tokens import (
    IGNORE_INDEX,
    SOURCE_DOMAIN,
    TARGET_DOMAIN,
    EncodedDataset,
    domain_mixture,
)

ALL_DOMAINS = (
    Path(__file__).resolve().parents[2] / "examples" / "data" / "sentiment-all-domains.csv"
)


def rows_of(path: Path, *domains: str) -> Counter[tuple[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return Counter(
            (r["text"], r["label"]) for r in csv.DictReader(handle) if r["domain"] in domains
        )


def pairs(*tables: Table | None) -> Counter[tuple[str, str]]:
    counts: Counter[tuple[str, str]] = Counter()
    for table in tables:
        assert table is not None
        counts.update(zip(table.texts, table.labels, strict=True))
    return counts


def domain_config(**overrides: object) -> DataConfig:
    settings: dict[str, object] = {
        "train": ALL_DOMAINS,
        "domain_column": "domain",
        "source_domains": ["yelp"],
        "target_domains": ["imdb"],
        "eval_fraction": 0.2,
        "test_fraction": 0.1,
        **overrides,
    }
    return DataConfig.model_validate(settings)


def test_domain_splits_partition_each_domain_stratified_and_seeded() -> None:
    splits = load_splits(domain_config())
    assert splits.target_train is not None and splits.target_eval is not None
    # Multisets of (text, label): each side is an exact partition of its domain's rows, so the
    # parts are disjoint, nothing is lost, and the unnamed domain (amazon) is nowhere.
    assert pairs(splits.train, splits.eval, splits.test) == rows_of(ALL_DOMAINS, "yelp")
    assert pairs(splits.target_train, splits.target_eval) == rows_of(ALL_DOMAINS, "imdb")
    assert splits.test is not None
    sizes = [len(t) for t in (splits.test, splits.eval, splits.train)]
    assert sizes == [100, 180, 720]
    assert (len(splits.target_eval), len(splits.target_train)) == (200, 800)
    for table in (splits.train, splits.eval, splits.test, splits.target_eval):
        assert table is not None
        counts = Counter(table.labels)
        assert abs(counts["0"] - counts["1"]) <= 1  # every domain is balanced, so each part is
    assert splits.label_names == ("0", "1")
    assert load_splits(domain_config()) == splits
    other = load_splits(domain_config(split_seed=1))
    assert other.target_eval != splits.target_eval and other.eval != splits.eval
    assert other.fingerprint() != splits.fingerprint()


def test_several_source_domains_and_explicit_eval_file() -> None:
    splits = load_splits(
        domain_config(source_domains=["yelp", "amazon"], eval=ALL_DOMAINS, test_fraction=0.0)
    )
    assert pairs(splits.train) == rows_of(ALL_DOMAINS, "yelp", "amazon")
    # An explicit eval file keeps its source-domain rows only: target rows are scored apart.
    assert pairs(splits.eval) == rows_of(ALL_DOMAINS, "yelp", "amazon")
    assert pairs(splits.target_train, splits.target_eval) == rows_of(ALL_DOMAINS, "imdb")


def test_without_domains_nothing_changes(sentiment_csv: Path) -> None:
    splits = load_splits(DataConfig(train=sentiment_csv))
    assert splits.target_train is None and splits.target_eval is None
    assert len(splits.train) + len(splits.eval) == 160


def test_missing_domain_column_names_file_and_column(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("text,label\ngood,1\nbad,0\nfine,1\nawful,0\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_splits(domain_config(train=path))
    message = str(info.value)
    assert "data.train" in message and str(path) in message
    assert "no column 'domain' (named by data.domain_column)" in message
    assert "its columns: text, label" in message


@pytest.mark.parametrize("side", ["source", "target"])
def test_unknown_domain_lists_the_domains_found(side: str) -> None:
    with pytest.raises(DataError) as info:
        load_splits(domain_config(**{f"{side}_domains": ["netflix"]}))
    message = str(info.value)
    assert f"data.{side}_domains" in message and str(ALL_DOMAINS) in message
    assert "['netflix'] do not occur in column 'domain'" in message
    assert "domains found: ['amazon', 'imdb', 'yelp']" in message


def test_domain_mixture_hides_target_labels() -> None:
    source = EncodedDataset([[1, 2], [3]], [0, 1])
    target = EncodedDataset([[4], [5, 6]], [IGNORE_INDEX, IGNORE_INDEX])
    mixed = domain_mixture(source, target)
    assert [mixed[i]["labels"] for i in range(4)] == [0, 1, IGNORE_INDEX, IGNORE_INDEX]
    domains = [SOURCE_DOMAIN, SOURCE_DOMAIN, TARGET_DOMAIN, TARGET_DOMAIN]
    assert [mixed[i]["domain_labels"] for i in range(4)] == domains
    assert "domain_labels" not in source[0]
