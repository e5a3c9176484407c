"""Shared fixtures: a tiny BERT built from config (seeded, no download), small real data, and
the environment every test runs under (offline hubs, offline W&B, no MLflow telemetry)."""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.postgres import postgres_server

os.environ.update(
    {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DO_NOT_TRACK": "1",
    }
)

ROOT = Path(__file__).resolve().parent.parent
ASSETS = Path(__file__).resolve().parent / "assets"
EXAMPLE_DATA = ROOT / "examples" / "data"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """The admin URL of the PostgreSQL the tests use: the machine's, or a throwaway one started
    for the session when none answers (tests/support/postgres.py says which, and how to pick)."""
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide BERT body with the committed tokenizer, saved as a local HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(ASSETS / "tokenizer")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def sentiment_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """160 real yelp sentences (balanced), small enough for seconds-long trials."""
    with (EXAMPLE_DATA / "yelp.csv").open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    picked = [r for r in rows if r["label"] == "0"][:80] + [r for r in rows if r["label"] == "1"][
        :80
    ]
    path = tmp_path_factory.mktemp("data") / "sentiment.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in picked)
    return path
