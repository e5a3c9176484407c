"""One trial through tunefleet against the same training in bare HF Trainer (``report_to=[]``).

Both sides train the same model on the same rows with the same hyperparameters, evaluating each
epoch; tunefleet adds its callbacks (best checkpoint, pruning report, grouped gradient norms,
telemetry to MLflow on sqlite and W&B offline through the background bus) and writes the best
checkpoint. Runs are interleaved and repeated; the ratio uses each side's median.

    python benchmarks/overhead.py [--model minilm] [--rows 600] [--epochs 1] [--repeats 2]

``benchmarks/telemetry.py`` imports the shared pieces from here (the sample rows, the config, the
bare Trainer, a tunefleet trial, the interleaving).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

if TYPE_CHECKING:
    from tunefleet.config import SweepConfig
    from tunefleet.platform.layout import Layout
    from tunefleet.platform.run_tracking import RunTracking
    from tunefleet.platform.store import Store
    from tunefleet.trainers.run import TrialRequest

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "yelp.csv"

Side = Callable[["SweepConfig", Path], float]
"""One way of training the config's trial in a fresh folder; returns its wall time."""


def sample_rows(rows: int, folder: Path) -> Path:
    """The first ``rows`` Yelp sentences as a CSV in ``folder``."""
    data = folder / "rows.csv"
    lines = DATA.read_text(encoding="utf-8").splitlines(keepends=True)
    data.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return data


def config_for(args: argparse.Namespace, data: Path, *, logging_steps: int = 10) -> SweepConfig:
    from tunefleet.config import parse_config

    return parse_config(
        {
            "name": "bench",
            "model": {"name_or_path": args.model},
            "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 64},
            "train": {
                "method": "full",
                "epochs": args.epochs,
                "batch_size": 16,
                "learning_rate": 5e-5,
                "logging_steps": logging_steps,
            },
            "search": {"metric": "eval_accuracy"},
        }
    )


def bare_trainer(config: SweepConfig, work: Path, *, report_to: Sequence[str] = ()) -> float:
    """HF Trainer as a user would write it, reporting to ``report_to`` (nothing by default):
    the config's model, rows, hyperparameters and logging interval, evaluating every epoch."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from tunefleet.trainers.data import load_splits
    from tunefleet.trainers.evaluation import compute_metrics
    from tunefleet.trainers.model import load_classifier, load_tokenizer, resolve_model
    from tunefleet.trainers.tokens import encode

    train = config.train
    started = time.perf_counter()
    splits = load_splits(config.data)
    resolved = resolve_model(config.model.name_or_path)
    tokenizer = load_tokenizer(resolved)
    set_seed(train.seed)
    model = load_classifier(resolved, splits.label_names)
    kwargs: dict[str, Any] = {
        "tokenizer": tokenizer,
        "label_names": splits.label_names,
        "max_length": config.data.max_length,
        "cache_dir": None,
    }
    train_set = encode(splits.train, **kwargs)
    # As run_trial does: an interval longer than an epoch logs once an epoch.
    steps_per_epoch = math.ceil(len(train_set) / train.batch_size)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(work),
            per_device_train_batch_size=train.batch_size,
            per_device_eval_batch_size=max(train.batch_size, 32),
            num_train_epochs=train.epochs,
            learning_rate=train.learning_rate,
            eval_strategy="epoch",
            save_strategy="no",
            logging_steps=max(1, min(train.logging_steps, steps_per_epoch)),
            report_to=list(report_to),
            disable_tqdm=True,
            seed=train.seed,
            remove_unused_columns=False,
        ),
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=train_set,
        eval_dataset=encode(splits.eval, **kwargs),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    return time.perf_counter() - started


@dataclass
class TunefleetRun:
    """A tunefleet trial's wall time, its telemetry (the callback's per-log seconds, what each
    sink got) and the events a sink had not acknowledged when the trial ended."""

    seconds: float
    tracking: RunTracking
    undelivered: dict[str, int]
    close_s: float = 0.0
    """How long the trial's end waited for its sinks (``RunTracking.close``)."""


@dataclass
class Sweep:
    """What a sweep has before its first trial: the MLflow experiment and parent run and,
    optionally, the store holding the sweep and its running trial 0."""

    config: SweepConfig
    layout: Layout
    experiment_id: str | None
    parent_run_id: str | None
    store: Store | None

    def start_trial(self) -> RunTracking:
        """Trial 0's telemetry, as a worker starts it (the store's live summary with a store)."""
        from tunefleet.platform.run_tracking import start_trial_tracking

        return start_trial_tracking(
            self.config,
            self.layout,
            trial=0,
            experiment_id=self.experiment_id,
            parent_run_id=self.parent_run_id,
            worker=0,
            db_url=self.layout.db_url if self.store is not None else None,
            store=self.store,
        )

    def close(self) -> None:
        if self.store is not None:
            self.store.dispose()


def open_sweep(config: SweepConfig, layout: Layout, *, with_store: bool) -> Sweep:
    from tunefleet.platform.run_tracking import start_sweep_tracking
    from tunefleet.platform.store import Store

    experiment_id, parent = start_sweep_tracking(config, layout) or (None, None)
    store = None
    if with_store:
        store = Store(layout.db_url)
        store.create_sweep(config.name, config=config.model_dump(mode="json"), budget=1)
        store.upsert_trial(config.name, 0, state="RUNNING")
    return Sweep(config, layout, experiment_id, parent, store)


def bench_request(config: SweepConfig, work: Path, callbacks: list[Any]) -> TrialRequest:
    """Trial 0 of the benchmark's sweep, writing under ``work``, never pruned."""
    from tunefleet.trainers.run import TrialRequest

    return TrialRequest(
        sweep=config.name,
        number=0,
        params={},
        checkpoint_dir=work / "ckpt",
        work_dir=work / "work",
        cache_dir=None,
        report=lambda epoch, value: False,
        callbacks=callbacks,
    )


def tunefleet_trial(config: SweepConfig, work: Path, *, with_store: bool = False) -> TunefleetRun:
    """A sweep trial as a worker runs it; timed from its telemetry's start to its ``close`` (which
    waits for the sinks, up to ``tracking.sink_wait_s``). The sweep's setup is not timed."""
    from tunefleet.platform.layout import Layout
    from tunefleet.trainers.run import run_trial

    sweep = open_sweep(config, Layout.at(work / "runs").ensure(), with_store=with_store)
    started = time.perf_counter()
    tracking = sweep.start_trial()
    try:
        run_trial(config, bench_request(config, work, [tracking.callback]))
    except BaseException:
        tracking.close("FAILED")
        raise
    closing = time.perf_counter()
    undelivered = tracking.close("FINISHED")
    seconds = time.perf_counter() - started
    sweep.close()
    return TunefleetRun(seconds, tracking, undelivered, seconds - (closing - started))


def through_tunefleet(config: SweepConfig, work: Path) -> float:
    return tunefleet_trial(config, work).seconds


def without_tracking(config: SweepConfig, work: Path) -> float:
    """tunefleet's training path with both trackers off: what the checkpointing costs alone."""
    off = config.model_copy(
        update={
            "tracking": config.tracking.model_validate(
                {"mlflow": {"enabled": False}, "wandb": {"enabled": False}}
            )
        }
    )
    return through_tunefleet(off, work)


def interleave(
    sides: Sequence[tuple[str, Side]],
    config: SweepConfig,
    *,
    repeats: int,
    folder: Path,
    rotate: bool = False,
    label: str = "repeat",
) -> dict[str, list[float]]:
    """Each side once per repeat, each run in a fresh folder; ``rotate`` starts repeat r with
    side r (so no side always runs first). Returns each side's wall times."""
    times: dict[str, list[float]] = {name: [] for name, _ in sides}
    width = max(len(name) for name, _ in sides)
    for repeat in range(repeats):
        start = repeat % len(sides) if rotate else 0
        for name, run in [*sides[start:], *sides[:start]]:
            work = Path(tempfile.mkdtemp(dir=folder))
            times[name].append(run(config, work))
            print(f"{label} {repeat}: {name:{width}s} {times[name][-1]:7.2f}s", flush=True)
    return times


def environment(args: argparse.Namespace) -> str:
    import torch

    return (
        f"model {args.model}, {args.rows} rows, {args.epochs} epoch(s), torch threads "
        f"{torch.get_num_threads()}, python {sys.version.split()[0]}"
    )


def trial_parser(description: str | None) -> argparse.ArgumentParser:
    """The options of a benchmark that times trials: model, rows, epochs, repeats."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    return parser


def main() -> None:
    args = trial_parser(__doc__).parse_args()
    from tunefleet.platform.worker import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        config = config_for(args, sample_rows(args.rows, Path(tmp)))
        sides: list[tuple[str, Side]] = [
            ("bare", bare_trainer),
            ("untracked", without_tracking),
            ("tunefleet", through_tunefleet),
        ]
        times = interleave(sides, config, repeats=args.repeats, folder=Path(tmp))
    bare, ours = statistics.median(times["bare"]), statistics.median(times["tunefleet"])
    untracked = statistics.median(times["untracked"])
    print(f"\n{environment(args)}")
    print(f"bare HF Trainer (report_to=[]): median {bare:.2f}s")
    print(
        f"tunefleet, trackers off (best checkpoint only): median {untracked:.2f}s "
        f"= {untracked / bare:.3f}x bare"
    )
    print(f"tunefleet trial (MLflow sqlite + W&B offline + checkpoint): median {ours:.2f}s")
    print(f"ratio tunefleet / bare: {ours / bare:.3f}x")


if __name__ == "__main__":
    main()
