"""Trainable-parameter counts on models built from config on the meta device (no weights, no
memory): on BERT-base, the methods without a peft or adapter test of their own; on a
Llama-3.2-1B-shaped decoder, every method against its analytic count and peft's own; and the
README's tables against benchmarks/param_counts.py, which computes them."""

from __future__ import annotations

import importlib.util
import itertools
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from peft import PeftModel
from transformers import BertConfig, BertForSequenceClassification

from tunefleet.config import TrainConfig
from tunefleet.trainers.methods import get_method
from tunefleet.trainers.run import count_parameters

HIDDEN, LAYERS, VOCAB, POSITIONS, FFN = 768, 12, 30522, 512, 3072
HEAD = HIDDEN * 2 + 2
POOLER = HIDDEN * HIDDEN + HIDDEN
EMBEDDINGS = (VOCAB + POSITIONS + 2) * HIDDEN + 2 * HIDDEN
BLOCK = (
    4 * (HIDDEN * HIDDEN + HIDDEN)
    + 2 * HIDDEN
    + (HIDDEN * FFN + FFN)
    + (FFN * HIDDEN + HIDDEN)
    + 2 * HIDDEN
)
BERT_BASE = EMBEDDINGS + LAYERS * BLOCK + POOLER + HEAD


def bert_base() -> BertForSequenceClassification:
    with torch.device("meta"):
        return BertForSequenceClassification(BertConfig(num_labels=2))


def test_the_analytic_bert_base_count_is_right() -> None:
    assert count_parameters(bert_base()) == (BERT_BASE, BERT_BASE) == (109_483_778, 109_483_778)


def test_full_trains_everything() -> None:
    model = get_method("full").prepare(bert_base(), TrainConfig(method="full"))
    assert count_parameters(model) == (BERT_BASE, BERT_BASE)


def test_unfreeze_starts_with_the_head_and_pooler() -> None:
    model = get_method("unfreeze").prepare(bert_base(), TrainConfig(method="unfreeze"))
    assert count_parameters(model) == (HEAD + POOLER, BERT_BASE)


def test_dann_adds_its_domain_classifier_to_full_training() -> None:
    settings = TrainConfig(method="dann", dann={"hidden": 128})
    model = get_method("dann").prepare(bert_base(), settings)
    domain = (HIDDEN * 128 + 128) + (128 * 2 + 2)
    assert count_parameters(model) == (BERT_BASE + domain, BERT_BASE + domain)


# --- A Llama-3.2-1B-shaped decoder, and the README's tables (benchmarks/param_counts.py) -------

ROOT = Path(__file__).resolve().parents[3]


def _benchmark() -> ModuleType:
    path = ROOT / "benchmarks" / "param_counts.py"
    spec = importlib.util.spec_from_file_location("param_counts", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file runs
    spec.loader.exec_module(module)
    return module


param_counts = _benchmark()
LLAMA = param_counts.SHAPES["llama-1b"]
# Meta's published count for Llama-3.2-1B (embeddings tied to the LM head) + a 2-label score.
LLAMA_1B = 1_235_814_400 + 2048 * 2
# What the shape's formulas give at the method defaults, written out so that a formula changed
# to fit a wrong measurement shows here.
LLAMA_1B_TRAINABLE = {
    "full": LLAMA_1B,
    "lora": 856_064,
    "adapter": 8_527_872,
    "adapter (pfeiffer)": 4_299_776,
    "prefix": 167_936,
    "prompt": 24_576,
    "ia3": 151_552,
    "unfreeze": 6_144,
    "dann": LLAMA_1B + 262_530,
}
PEFT_METHODS = {"lora", "prefix", "prompt", "ia3"}
MEASURED = [case for case in param_counts.CASES if ("llama-1b", case) not in param_counts.PENDING]


def test_the_analytic_llama_1b_count_is_right() -> None:
    with torch.device("meta"):
        model = LLAMA.build()
    assert count_parameters(model) == (LLAMA_1B, LLAMA_1B)
    assert LLAMA.total(LLAMA.dims) == LLAMA_1B


def test_the_formulas_give_the_written_out_counts() -> None:
    assert {case: param_counts.analytic(LLAMA, case).trainable for case in param_counts.CASES} == (
        LLAMA_1B_TRAINABLE
    )


@pytest.mark.parametrize("case", MEASURED)
def test_llama_1b_counts_equal_the_analytic_and_peft_ones(case: str) -> None:
    expected = param_counts.analytic(LLAMA, case)
    model = param_counts.prepared(LLAMA, case)
    trainable, total = count_parameters(model)
    assert (trainable, total) == (expected.trainable, LLAMA_1B + expected.added)
    assert isinstance(model, PeftModel) == (param_counts.CASES[case]["method"] in PEFT_METHODS)
    if isinstance(model, PeftModel):
        assert model.get_nb_trainable_parameters() == (trainable, total)


def readme_tables() -> dict[str, list[list[str]]]:
    """README tables headed like the benchmark's, keyed by the line above each: cells per row."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    tables: dict[str, list[list[str]]] = {}
    for i, line in enumerate(lines):
        if line != param_counts.README_HEADER:
            continue
        title = next(above for above in reversed(lines[:i]) if above.strip())
        body = itertools.takewhile(lambda row: row.startswith("|"), lines[i + 2 :])
        tables[title] = [[cell.strip() for cell in row.strip("|").split("|")] for row in body]
    return tables


def test_the_readme_tables_are_what_the_benchmark_computes() -> None:
    tables = readme_tables()
    for shape in param_counts.SHAPES.values():
        titled = [title for title in tables if title.startswith(shape.title)]
        assert len(titled) == 1, f"README.md needs one table under {shape.title!r}: {list(tables)}"
        computed = [param_counts.readme_cells(row) for row in param_counts.rows(shape)]
        assert tables[titled[0]] == computed, f"README.md's {shape.title} table is stale"
