"""Shared fixtures: a tiny BERT and tiny decoders built from config (seeded, no download), small
real data, and the environment every test runs under (offline hubs, offline W&B, no MLflow
telemetry)."""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.models import DECODERS, build_decoder, build_encoder
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
    return build_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session", params=DECODERS)
def tiny_decoder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Each tiny decoder (GPT-2, Llama, Qwen2 shapes) in turn; its tokenizer has no pad token."""
    kind: str = request.param
    return build_decoder(kind, tmp_path_factory.mktemp(f"tiny-{kind}"))


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
