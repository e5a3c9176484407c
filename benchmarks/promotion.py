"""What the promotion gate costs on top of a plain registration.

One small sweep (the packaged MiniLM-L6 by default, full fine-tuning and LoRA, one epoch on Yelp
sentences with a held-out test split), then, per trial and repeat, interleaved:

- baseline: ``tunefleet promote NAME --trial N --alias plain`` (register the checkpoint, move a
  plain alias: what ``promote`` did before the gate);
- gated: ``tunefleet promote NAME --trial N`` (register as @challenger, download and score the
  challenger and the champion on the test split, move the aliases), no latency budget;
- gated+latency: the same with ``promotion.max_p95_latency_ms`` set, so each model is timed on
  at least 20 batches.

Each promotion runs in this process through the functions behind the CLI (imports warmed by a
first, untimed promotion); the ratios use each side's median seconds.

    python benchmarks/promotion.py [--model minilm] [--rows 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "examples" / "data" / "yelp.csv"
NAME = "gatebench"


def sample(folder: Path, rows: int) -> Path:
    with SENTIMENT.open(encoding="utf-8", newline="") as handle:
        table = list(csv.DictReader(handle))
    random.Random(0).shuffle(table)
    per_class = rows // 2
    picked = [r for r in table if r["label"] == "0"][:per_class]
    picked += [r for r in table if r["label"] == "1"][:per_class]
    path = folder / "data.csv"
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows({"text": r["text"], "label": r["label"]} for r in picked)
    return path


def sweep(folder: Path, model: str, rows: int) -> Path:
    config = {
        "name": NAME,
        "model": {"name_or_path": model},
        "data": {"train": str(sample(folder, rows)), "test_fraction": 0.25, "max_length": 64},
        "train": {"epochs": 1, "batch_size": 16},
        "search": {
            "trials": 2,
            "sampler": "grid",
            "pruner": "none",
            "space": {"train.method": {"choices": ["full", "lora"]}},
        },
        "tracking": {"mlflow": {"enabled": True}, "wandb": {"enabled": False}},
        # Let every gated promotion move the champion: the cost measured is the same whether
        # the gate passes or fails, and moving keeps a champion to score against.
        "promotion": {"min_gain": None},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = folder / "runs"
    subprocess.run(
        [sys.executable, "-m", "tunefleet", "sweep", str(path), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    return out


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run()
    return time.perf_counter() - start


def main() -> None:
    from tunefleet.config.schema import PromotionConfig
    from tunefleet.platform.layout import Layout
    from tunefleet.platform.promote import promote, promote_gated
    from tunefleet.platform.status import open_view
    from tunefleet.platform.store import Store

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sides: dict[str, list[float]] = {"plain": [], "gated": [], "gated+latency": []}
    with tempfile.TemporaryDirectory(prefix="gatebench-") as tmp:
        layout = Layout.at(sweep(Path(tmp), args.model, args.rows))
        store = Store(layout.db_url)
        view = open_view(store, NAME, layout.db_url)
        # The same sweep with a latency budget (never binding): the gate times 20+ batches.
        budget = PromotionConfig(min_gain=None, max_p95_latency_ms=1e9)
        with_budget = dataclasses.replace(
            view, config=view.config.model_copy(update={"promotion": budget})
        )
        runs: dict[str, Callable[[int], object]] = {
            "plain": lambda n: promote(view, store, layout, trial=n, alias="plain"),
            "gated": lambda n: promote_gated(view, store, layout, trial=n),
            "gated+latency": lambda n: promote_gated(with_budget, store, layout, trial=n),
        }
        runs["gated"](0)  # warm imports, and a champion to score against
        for _ in range(args.repeats):
            for trial in (0, 1):
                for side, run in runs.items():
                    sides[side].append(timed(lambda run=run, trial=trial: run(trial)))
        store.dispose()
    base = statistics.median(sides["plain"])
    print(
        f"model {args.model}, {args.rows} rows (test split 25%), "
        f"{len(sides['plain'])} promotions per side, full and LoRA trials"
    )
    for side, seconds in sides.items():
        median = statistics.median(seconds)
        print(f"{side:<14} median {median:6.2f} s   {median / base:6.2f}x plain")


if __name__ == "__main__":
    main()
