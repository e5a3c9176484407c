"""What checkpoint retention saves on disk and what it costs, against the same sweep without it.

Part 1 — a real sweep (``tunefleet sweep``, one worker, full fine-tuning of a small BERT built
here from config with the committed tokenizer, tracking off), the same seed on both sides:
baseline without a ``checkpoints:`` section, then with ``keep_top_k: 1`` and ``max_disk_gb`` of
two and a half of the baseline's checkpoints, interleaved ``--repeats`` times. Printed: the
bytes its checkpoints hold at the end, and the sweep's wall time (the gc after every trial and
the disk check before it included), each as a ratio to the baseline.

Part 2 — gc's own cost on a sweep of ``--store-trials`` trials (real store rows in sqlite, real
folders): planning (store reads + the walk + the plan) against the walk alone (a ``du``).

    python benchmarks/retention.py [--trials 6] [--repeats 2] [--hidden 64] [--store-trials 300]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
TOKENIZER = ROOT / "tests" / "assets" / "tokenizer"
DATA = ROOT / "examples" / "data" / "yelp.csv"
ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}


def build_model(folder: Path, hidden: int) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def run_sweep(folder: Path, model: Path, trials: int, checkpoints: dict[str, Any]) -> float:
    rows = DATA.read_text(encoding="utf-8").splitlines(keepends=True)
    data = folder / "rows.csv"
    data.write_text("".join(rows[:201]), encoding="utf-8")
    config = {
        "name": "bench",
        "model": {"name_or_path": str(model)},
        "data": {"train": str(data), "max_length": 32},
        "train": {"method": "full", "epochs": 1, "batch_size": 32, "logging_steps": 5},
        "search": {
            "trials": trials,
            "sampler": "random",
            "pruner": "none",
            "space": {"train.learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        },
        "checkpoints": checkpoints,
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    path = folder / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    started = time.perf_counter()
    command = [sys.executable, "-m", "tunefleet", "sweep", str(path), "--out", str(folder / "out")]
    result = subprocess.run(
        command, env={**os.environ, **ENV}, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"sweep failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return time.perf_counter() - started


def part_sweep(args: argparse.Namespace, tmp: Path) -> None:
    """Interleaved repeats (baseline, retention, baseline, ...): the machine's load changes
    over minutes, and each side's median sees the same spread of it."""
    import statistics

    model = build_model(tmp / "model", args.hidden)
    walls: dict[str, list[float]] = {"baseline": [], "retention": []}
    kept: dict[str, int] = {}
    checkpoint = 0
    for repeat in range(args.repeats):
        for side in walls:
            folder = tmp / f"{side}-{repeat}"
            folder.mkdir()
            budget = {"keep_top_k": 1, "max_disk_gb": 2.5 * checkpoint / 1e9}
            walls[side].append(
                run_sweep(folder, model, args.trials, budget if side == "retention" else {})
            )
            root = folder / "out" / "checkpoints" / "bench"
            kept[side] = folder_bytes(root)
            if side == "baseline":  # the budget: two and a half of the baseline's checkpoints
                checkpoint = max(folder_bytes(p) for p in root.iterdir())
    base, ret = (statistics.median(walls[s]) for s in ("baseline", "retention"))
    print(
        f"part 1: {args.trials} trials x {args.repeats} repeats, checkpoint "
        f"{checkpoint / 1e6:.2f} MB, max_disk_gb = 2.5 checkpoints, keep_top_k 1"
    )
    print(
        f"  checkpoints on disk at the end: baseline {kept['baseline'] / 1e6:.2f} MB, retention "
        f"{kept['retention'] / 1e6:.2f} MB, ratio {kept['retention'] / kept['baseline']:.2f}x"
    )
    print(
        f"  sweep wall time (median): baseline {base:.1f}s, retention {ret:.1f}s, "
        f"ratio {ret / base:.2f}x; each run: "
        + ", ".join(f"{side} " + "/".join(f"{w:.1f}s" for w in ws) for side, ws in walls.items())
    )


def part_gc(args: argparse.Namespace, tmp: Path) -> None:
    from tunefleet.config import SweepConfig
    from tunefleet.platform.layout import Layout
    from tunefleet.platform.retention import held_files, sweep_plan
    from tunefleet.platform.store import Store

    layout = Layout.at(tmp / "gc").ensure()
    store = Store(layout.db_url)
    config = SweepConfig.model_validate(
        {"name": "gc", "data": {"train": str(DATA)}, "checkpoints": {"keep_top_k": 10}}
    )
    store.create_sweep("gc", config=config.model_dump(mode="json"), budget=args.store_trials)
    for number in range(args.store_trials):
        folder = layout.checkpoint("gc", number)
        folder.mkdir(parents=True)
        for name in ("model.safetensors", "config.json", "tokenizer.json", "tunefleet.json"):
            (folder / name).write_bytes(os.urandom(16_384))
        store.upsert_trial(
            "gc", number, state="COMPLETE", value=number / args.store_trials, checkpoint=str(folder)
        )
    walk = min(_timed(lambda: held_files(layout, "gc")) for _ in range(5))
    planned = min(_timed(lambda: sweep_plan(store, layout, "gc", config)) for _ in range(5))
    removals = len(sweep_plan(store, layout, "gc", config).removals)
    print(
        f"part 2: gc planning over {args.store_trials} trials ({removals} to delete): "
        f"{planned * 1e3:.1f} ms vs the walk alone {walk * 1e3:.1f} ms, "
        f"ratio {planned / walk:.2f}x (best of 5)"
    )
    store.dispose()


def _timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--store-trials", type=int, default=300)
    parser.add_argument("--part", choices=("sweep", "gc", "all"), default="all")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.part in ("sweep", "all"):
            part_sweep(args, Path(tmp))
        if args.part in ("gc", "all"):
            part_gc(args, Path(tmp))


if __name__ == "__main__":
    main()
