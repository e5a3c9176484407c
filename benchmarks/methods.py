"""Every fine-tuning method on real data, on the one training path, with measured cost.

Part 1 — methods: the Yelp sentiment sentences (600 train / 200 eval / 200 test, stratified) with
the packaged MiniLM-L6, each method at a fixed, commonly used learning rate, several seeds:
held-out test accuracy at the best-eval epoch (mean ± sd), trainable share, wall time, peak RSS.
Baseline in the same run: full fine-tuning.

Part 2 — domain adaptation: source-only (full fine-tuning on the source domain) against DANN,
amazon->yelp, imdb->yelp, yelp->amazon; the checkpoint is chosen on source eval accuracy (no target
labels are used for selection) and scored on the target domain's held-out rows.

Each run is its own subprocess, so peak RSS is that run's alone.

    python benchmarks/methods.py [--seeds 3] [--epochs 3] [--part methods|domains|all] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SENTIMENT = ROOT / "examples" / "data" / "yelp.csv"
DOMAINS = ROOT / "examples" / "data" / "sentiment-all-domains.csv"
ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}

#: Learning rates commonly used for each method on BERT-sized encoders (not tuned here).
METHODS: dict[str, dict[str, Any]] = {
    "full": {"learning_rate": 5e-5},
    "lora": {"learning_rate": 1e-3, "lora": {"r": 8, "alpha": 16}},
    "adapter": {"learning_rate": 1e-3, "adapter": {"size": 64, "placement": "houlsby"}},
    "prefix": {"learning_rate": 1e-2, "prefix": {"virtual_tokens": 10}},
    "prompt": {"learning_rate": 3e-2, "prompt": {"virtual_tokens": 10}},
    "ia3": {"learning_rate": 5e-3},
    "unfreeze": {
        "learning_rate": 1e-4,
        "unfreeze": {"every_epochs": 1, "blocks_per_step": 2, "layer_lr_decay": 0.8},
    },
}
PAIRS = (("amazon", "yelp"), ("imdb", "yelp"), ("yelp", "amazon"))


def one_run(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the child: one trial, then its metrics, trainable share and peak RSS."""
    from tunefleet.config import parse_config
    from tunefleet.platform.worker import quiet_libraries
    from tunefleet.trainers.run import TrialRequest, run_trial

    quiet_libraries()
    config = parse_config(spec["config"])
    work = Path(tempfile.mkdtemp())
    started = time.perf_counter()
    outcome = run_trial(
        config,
        TrialRequest(
            sweep="bench",
            number=0,
            params={},
            checkpoint_dir=work / "ckpt",
            work_dir=work / "work",
            cache_dir=Path(spec["cache"]),
        ),
    )
    return {
        "metrics": outcome.metrics,
        "value": outcome.value,
        "trainable": outcome.trainable_parameters,
        "total": outcome.total_parameters,
        "seconds": time.perf_counter() - started,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_child(config: dict[str, Any], cache: Path) -> dict[str, Any]:
    spec = json.dumps({"config": config, "cache": str(cache)})
    result = subprocess.run(
        [sys.executable, __file__, "--one", spec],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"run failed: {result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def method_config(method: str, seed: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "bench",
        "model": {"name_or_path": "minilm"},
        "data": {
            "train": str(SENTIMENT),
            "eval_fraction": 0.25,
            "test_fraction": 0.2,
            "max_length": 64,
        },
        "train": {
            "method": method,
            "epochs": epochs,
            "batch_size": 16,
            "seed": seed,
            "warmup_ratio": 0.1,
            "weight_decay": 0.01,
            **METHODS[method],
        },
        "search": {"metric": "eval_accuracy"},
    }


def domain_config(
    method: str, source: str, target: str, seed: int, epochs: int, lam: float = 1.0
) -> dict[str, Any]:
    train: dict[str, Any] = {
        "method": method,
        "epochs": epochs,
        "batch_size": 16,
        "seed": seed,
        "learning_rate": 5e-5,
        "warmup_ratio": 0.1,
    }
    if method == "dann":
        train["dann"] = {"lambda": lam, "schedule": "ganin", "gamma": 10.0, "hidden": 128}
    return {
        "name": "bench",
        "model": {"name_or_path": "minilm"},
        "data": {
            "train": str(DOMAINS),
            "eval_fraction": 0.2,
            "max_length": 64,
            "domain_column": "domain",
            "source_domains": [source],
            "target_domains": [target],
        },
        "train": train,
        "search": {"metric": "eval_accuracy"},
    }


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def part_methods(seeds: int, epochs: int, cache: Path, methods: list[str]) -> list[str]:
    rows = [
        "| method | test accuracy | trainable | wall time | peak RSS |",
        "|---|---|---|---|---|",
    ]
    baseline = None
    for method in methods:
        runs = [run_child(method_config(method, seed, epochs), cache) for seed in range(seeds)]
        for seed, run in enumerate(runs):
            print(
                f"  {method} seed {seed}: test_accuracy {run['metrics'].get('test_accuracy'):.3f} "
                f"in {run['seconds']:.1f}s",
                flush=True,
            )
        accuracy = [r["metrics"]["test_accuracy"] for r in runs]
        seconds = statistics.mean(r["seconds"] for r in runs)
        baseline = baseline or seconds
        share = 100 * runs[0]["trainable"] / runs[0]["total"]
        rows.append(
            f"| {method} | {mean_sd(accuracy)} | {share:.2f} % ({runs[0]['trainable']:,}) | "
            f"{seconds:.1f} s ({seconds / baseline:.2f}× full) | "
            f"{statistics.mean(r['peak_rss_mb'] for r in runs):.0f} MB |"
        )
    return rows


def part_domains(seeds: int, epochs: int, cache: Path, lam: float, methods: list[str]) -> list[str]:
    rows = [
        "| source → target | source-only target accuracy | DANN target accuracy | difference |",
        "|---|---|---|---|",
    ]
    for source, target in PAIRS:
        scores: dict[str, list[float]] = {}
        for method in methods:
            runs = [
                run_child(domain_config(method, source, target, seed, epochs, lam), cache)
                for seed in range(seeds)
            ]
            scores[method] = [r["metrics"]["eval_target_accuracy"] for r in runs]
            print(f"  {source}->{target} {method}: {scores[method]}", flush=True)
        cells = [mean_sd(scores[m]) if m in scores else "—" for m in ("full", "dann")]
        gain = (
            f"{statistics.mean(scores['dann']) - statistics.mean(scores['full']):+.3f}"
            if len(scores) == 2
            else "—"
        )
        rows.append(f"| {source} → {target} | {cells[0]} | {cells[1]} | {gain} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--part", choices=["methods", "domains", "all"], default="all")
    parser.add_argument("--out", type=Path, help="also write the tables here (markdown)")
    parser.add_argument(
        "--domain-methods",
        nargs="+",
        default=["full", "dann"],
        choices=["full", "dann"],
        help="part 2: which sides to run",
    )
    parser.add_argument(
        "--dann-lambda",
        type=float,
        default=1.0,
        help="part 2: DANN's final lambda under the ganin schedule",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=list(METHODS),
        choices=list(METHODS),
        help="part 1's methods; the first is the wall-time baseline (default: all)",
    )
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(json.loads(args.one))))
        return
    started = time.time()
    lines = [f"seeds {args.seeds}, epochs {args.epochs}, {os.cpu_count()} CPUs"]
    with tempfile.TemporaryDirectory() as cache:
        if args.part in ("methods", "all"):
            lines += ["", *part_methods(args.seeds, args.epochs, Path(cache), args.methods)]
        if args.part in ("domains", "all"):
            lines += [
                "",
                f"DANN lambda {args.dann_lambda}",
                *part_domains(
                    args.seeds, args.epochs, Path(cache), args.dann_lambda, args.domain_methods
                ),
            ]
    lines.append(f"\ntotal {time.time() - started:.0f} s")
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
