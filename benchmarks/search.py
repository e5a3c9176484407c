"""What pruning saves: the compute a sweep needs to reach the best eval accuracy of the same
sweep without pruning (within ``--tolerance``), for ASHA and the median pruner evaluating four
times per epoch, and for the median pruner evaluating once per epoch (tunefleet before
``train.eval_every``), each as a ratio of the unpruned sweep's own, over several sampler seeds.

Real data and model: the packaged MiniLM-L6, full fine-tuning, on the first ``--rows`` Yelp
sentences of the demo (a fifth held out for evaluation), a learning rate searched over
``1e-6 .. 3e-4`` (log) by TPE: the low end cannot learn in ``--epochs``, which is what a pruner
should notice. Trackers off. Every arm of a seed runs the same config but for the pruner and the
evaluation schedule; the unpruned arm evaluates four times per epoch too, so that its best is
taken over as many evaluations as the pruned ones see.

For each sweep, trials are taken in the order they finished; a trial's compute is its duration
(Optuna's start to end, model loading included) and, free of the machine's load, the optimizer
steps it trained. *To target*: the compute of every trial finished up to the first one whose
value reaches the unpruned sweep's best minus the tolerance (the unpruned sweep reaches it at its
own best trial). *Whole*: the whole sweep's compute.

    python benchmarks/search.py [--seeds 0,1,2] [--trials 10] [--rows 400] [--epochs 2]
        [--arms none,asha,median,median-epoch] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "yelp.csv"
TUNEFLEET = [sys.executable, "-m", "tunefleet"]
ENV = {
    **os.environ,
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "WANDB_MODE": "offline",
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
ARMS: dict[str, dict[str, Any]] = {
    "none": {"pruner": "none", "eval_every": 0.25},
    "asha": {"pruner": "asha", "eval_every": 0.25},
    "median": {"pruner": "median", "eval_every": 0.25},
    "median-epoch": {"pruner": "median", "eval_every": None},
}
"""Arm -> search.pruner and train.eval_every; ``none`` is the baseline every ratio divides by."""


@dataclass(frozen=True)
class Finished:
    number: int
    state: str
    value: float | None
    seconds: float
    steps: int


@dataclass(frozen=True)
class Arm:
    name: str
    seed: int
    best: float | None
    pruned: int
    whole_s: float
    whole_steps: int
    target_s: float | None
    target_steps: int | None
    wall_s: float


def sweep_config(args: argparse.Namespace, folder: Path, arm: str, seed: int) -> Path:
    rows = DATA.read_text(encoding="utf-8").splitlines(keepends=True)
    data = folder / "rows.csv"
    data.write_text("".join(rows[: args.rows + 1]), encoding="utf-8")
    settings = ARMS[arm]
    config: dict[str, Any] = {
        "name": f"{arm}-s{seed}",
        "model": {"name_or_path": "minilm"},
        "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 48},
        "train": {
            "method": "full",
            "epochs": args.epochs,
            "batch_size": 16,
            "warmup_ratio": 0.1,
            "eval_every": settings["eval_every"],
        },
        "search": {
            "trials": args.trials,
            "sampler": "tpe",
            "seed": seed,
            "pruner": settings["pruner"],
            "space": {"train.learning_rate": {"low": 1e-6, "high": 3e-4, "log": True}},
        },
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    path = folder / f"{arm}-s{seed}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_sweep(
    args: argparse.Namespace, folder: Path, arm: str, seed: int
) -> tuple[list[Finished], float]:
    config = sweep_config(args, folder, arm, seed)
    out = folder / "out"
    started = time.perf_counter()
    result = subprocess.run(
        [*TUNEFLEET, "sweep", str(config), "--out", str(out), "--workers", "1"],
        env=ENV,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{arm} seed {seed} failed:\n{result.stdout}\n{result.stderr}")
    return finished(f"sqlite:///{out / 'tunefleet.db'}", f"{arm}-s{seed}"), wall


def finished(url: str, name: str) -> list[Finished]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=url)
    done = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    done.sort(key=lambda t: t.datetime_complete)  # type: ignore[arg-type, return-value]
    return [
        Finished(
            number=t.number,
            state=t.state.name,
            value=t.value if t.state.name == "COMPLETE" else None,
            seconds=(t.datetime_complete - t.datetime_start).total_seconds(),  # type: ignore[operator]
            steps=max(t.intermediate_values, default=0),
        )
        for t in done
    ]


def to_target(trials: list[Finished], target: float) -> tuple[float | None, int | None]:
    seconds, steps = 0.0, 0
    for trial in trials:
        seconds, steps = seconds + trial.seconds, steps + trial.steps
        if trial.value is not None and trial.value >= target:
            return seconds, steps
    return None, None


def measure(args: argparse.Namespace, seed: int) -> list[Arm]:
    runs: dict[str, tuple[list[Finished], float]] = {}
    for arm in args.arms:
        with tempfile.TemporaryDirectory(prefix=f"search-{arm}-") as tmp:
            runs[arm] = run_sweep(args, Path(tmp), arm, seed)
        print(f"  seed {seed} {arm}: {len(runs[arm][0])} trials in {runs[arm][1]:.0f}s", flush=True)
    baseline = [t.value for t in runs["none"][0] if t.value is not None]
    target = max(baseline) - args.tolerance
    arms = []
    for arm, (trials, wall) in runs.items():
        values = [t.value for t in trials if t.value is not None]
        target_s, target_steps = to_target(trials, target)
        arms.append(
            Arm(
                name=arm,
                seed=seed,
                best=max(values, default=None),
                pruned=sum(t.state == "PRUNED" for t in trials),
                whole_s=sum(t.seconds for t in trials),
                whole_steps=sum(t.steps for t in trials),
                target_s=target_s,
                target_steps=target_steps,
                wall_s=wall,
            )
        )
    return arms


def ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def report(arms: list[Arm], args: argparse.Namespace) -> None:
    seeds = sorted({a.seed for a in arms})
    base = {s: next(a for a in arms if a.name == "none" and a.seed == s) for s in seeds}
    print(f"\ntolerance {args.tolerance * 100:.1f} points; ratios against `none` of the same seed")
    print(
        "| arm | seed | best acc | pruned | to target: s (ratio) | to target: steps (ratio) "
        "| whole: s (ratio) | whole: steps (ratio) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for arm in arms:
        b = base[arm.seed]
        print(
            f"| {arm.name} | {arm.seed} | {_f(arm.best, 3)} | {arm.pruned} "
            f"| {_f(arm.target_s, 0)} ({_f(ratio(arm.target_s, b.target_s), 2)}) "
            f"| {_f(arm.target_steps, 0)} ({_f(ratio(arm.target_steps, b.target_steps), 2)}) "
            f"| {arm.whole_s:.0f} ({_f(ratio(arm.whole_s, b.whole_s), 2)}) "
            f"| {arm.whole_steps} ({_f(ratio(arm.whole_steps, b.whole_steps), 2)}) |"
        )
    print("\nmedian over seeds (a seed whose arm never reached the target counts as not reached):")
    for name in args.arms:
        mine = [a for a in arms if a.name == name]
        cells = []
        for field in ("target_s", "target_steps", "whole_s", "whole_steps"):
            ratios = [ratio(getattr(a, field), getattr(base[a.seed], field)) for a in mine]
            reached = [r for r in ratios if r is not None]
            missed = len(ratios) - len(reached)
            text = _f(statistics.median(reached), 2) if reached else "-"
            cells.append(f"{field} {text}" + (f" ({missed} not reached)" if missed else ""))
        print(f"  {name}: " + ", ".join(cells))


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.005)
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    args.arms = args.arms.split(",")
    if "none" not in args.arms:
        raise SystemExit("--arms: `none` is the baseline every ratio needs")
    arms: list[Arm] = []
    for seed in (int(s) for s in args.seeds.split(",")):
        arms.extend(measure(args, seed))
    report(arms, args)
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(a) for a in arms], indent=1))


if __name__ == "__main__":
    main()
