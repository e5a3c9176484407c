"""One real checkpoint per adaptation method, trained for an epoch on a tiny model through the
same path as a sweep's trial (``run_trial``): what export and merge tests read."""

from __future__ import annotations

import csv
import random
from pathlib import Path
from typing import Any

from support.trials import trial_request
from tunefleet.config import METHODS, parse_config
from tunefleet.trainers.run import run_trial

DOMAINS = Path(__file__).resolve().parents[2] / "examples" / "data" / "sentiment-all-domains.csv"
#: Texts every export is compared on: uneven lengths (real padding), an empty-ish one, a long one.
PROBE = [
    "the food was wonderful",
    "never again, awful service and cold soup",
    "fine",
    "meh.",
    "I waited an hour for a table and the staff ignored us the whole evening " * 3,
]
#: Settings that make each method change its weights visibly in one short epoch (so a lost
#: adapter or head would change the logits).
TRAIN: dict[str, dict[str, Any]] = {
    "full": {},
    "lora": {"learning_rate": 1e-2},
    "adapter": {"learning_rate": 1e-2, "adapter": {"size": 8}},
    "prefix": {"learning_rate": 3e-2},
    "prompt": {"learning_rate": 3e-2},
    "ia3": {"learning_rate": 3e-2},
    "unfreeze": {"learning_rate": 1e-2},
    "dann": {"learning_rate": 3e-3, "dann": {"hidden": 16}},
}
assert set(TRAIN) == set(METHODS)


def domain_csv(folder: Path) -> Path:
    """20 rows per (domain, label) of yelp (source) and imdb (target)."""
    with DOMAINS.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    random.Random(0).shuffle(rows)
    picked = [
        row
        for domain in ("yelp", "imdb")
        for label in ("0", "1")
        for row in [r for r in rows if r["domain"] == domain and r["label"] == label][:20]
    ]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "domains.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label", "domain"])
        writer.writeheader()
        writer.writerows(picked)
    return path


def train_checkpoint(method: str, *, model: Path, data: Path, folder: Path) -> Path:
    """The checkpoint folder of a one-epoch ``method`` trial of ``model`` on ``data`` (a
    text,label CSV; dann reads ``domain_csv`` written under ``folder`` instead)."""
    options: dict[str, Any] = {"train": str(data), "max_length": 32, "test_fraction": 0.2}
    if method == "dann":
        options = {
            "train": str(domain_csv(folder)),
            "max_length": 32,
            "domain_column": "domain",
            "source_domains": ["yelp"],
            "target_domains": ["imdb"],
        }
    config = parse_config(
        {
            "name": "unit",
            "model": {"name_or_path": str(model)},
            "data": options,
            "train": {"method": method, "epochs": 1, "batch_size": 16, **TRAIN[method]},
        }
    )
    outcome = run_trial(config, trial_request(folder, params={"train.learning_rate": 0.01}))
    assert outcome.checkpoint is not None, f"{method}: no checkpoint"
    return outcome.checkpoint
