"""What the promotion gate costs on top of a plain registration.

One small sweep (the packaged MiniLM-L6 by default, full fine-tuning and LoRA, one epoch on Yelp
sentences with a held-out test split), then, per trial and repeat, interleaved:

- baseline: ``tunefleet promote NAME --trial N --alias plain`` (register the checkpoint, move a
  plain alias: what ``promote`` did before the gate);
- gated: ``tunefleet promote NAME --trial N`` (register as @challenger, download and score the
  challenger and the champion on the test split, move the aliases).

Each promotion runs in this process through the CLI's ``main`` (imports warmed by a first,
untimed promotion); the ratio uses each side's median seconds.

    python benchmarks/promotion.py [--model minilm] [--rows 400] [--repeats 3]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
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


def timed(*argv: str) -> float:
    from tunefleet.platform.cli import main

    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = main(list(argv))
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"tunefleet {' '.join(argv)} exited {code}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gatebench-") as tmp:
        out = sweep(Path(tmp), args.model, args.rows)
        where = ["--out", str(out)]
        trials = ["0", "1"]
        timed("promote", NAME, "--trial", "0", "--alias", "warm", *where)
        timed("promote", NAME, "--trial", "0", *where)  # a champion to score against
        plain: list[float] = []
        gated: list[float] = []
        for _ in range(args.repeats):
            for trial in trials:
                plain.append(timed("promote", NAME, "--trial", trial, "--alias", "plain", *where))
                gated.append(timed("promote", NAME, "--trial", trial, *where))
    base, gate = statistics.median(plain), statistics.median(gated)
    print(f"model {args.model}, {args.rows} rows (test split 25%), {len(plain)} promotions each")
    print(f"plain registration (--alias): median {base:.2f} s")
    print(f"gated promotion:              median {gate:.2f} s")
    print(f"gated / plain: {gate / base:.2f}x")


if __name__ == "__main__":
    main()
