"""One trial through tunefleet against the same training in bare HF Trainer (``report_to=[]``).

Both sides train the same model on the same rows with the same hyperparameters, evaluating each
epoch; tunefleet adds its callbacks (best checkpoint, pruning report, telemetry to MLflow on
sqlite and W&B offline through the background bus) and writes the best checkpoint. Runs are
interleaved and repeated; the ratio uses each side's median.

    python benchmarks/overhead.py [--model minilm] [--rows 600] [--epochs 1] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "yelp.csv"


def config_for(args: argparse.Namespace, data: Path):  # type: ignore[no-untyped-def]
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
                "logging_steps": 10,
            },
            "search": {"metric": "eval_accuracy"},
        }
    )


def bare_trainer(config, work: Path) -> float:  # type: ignore[no-untyped-def]
    """HF Trainer as a user would write it, with nothing reported anywhere."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from tunefleet.trainers.data import load_splits
    from tunefleet.trainers.evaluation import compute_metrics
    from tunefleet.trainers.model import load_classifier, load_tokenizer, resolve_model
    from tunefleet.trainers.tokens import encode

    started = time.perf_counter()
    splits = load_splits(config.data)
    resolved = resolve_model(config.model.name_or_path)
    tokenizer = load_tokenizer(resolved)
    set_seed(0)
    model = load_classifier(resolved, splits.label_names)
    kwargs = {
        "tokenizer": tokenizer,
        "label_names": splits.label_names,
        "max_length": 64,
        "cache_dir": None,
    }
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(work),
            per_device_train_batch_size=16,
            per_device_eval_batch_size=32,
            num_train_epochs=config.train.epochs,
            learning_rate=5e-5,
            eval_strategy="epoch",
            save_strategy="no",
            logging_steps=10,
            report_to=[],
            disable_tqdm=True,
            seed=0,
            remove_unused_columns=False,
        ),
        data_collator=DataCollatorWithPadding(tokenizer),
        train_dataset=encode(splits.train, **kwargs),
        eval_dataset=encode(splits.eval, **kwargs),
        compute_metrics=compute_metrics,
    )
    trainer.train()
    return time.perf_counter() - started


def through_tunefleet(config, work: Path) -> float:  # type: ignore[no-untyped-def]
    from tunefleet.platform.layout import Layout
    from tunefleet.platform.telemetry import start_sweep_tracking, start_trial_tracking
    from tunefleet.tracking.callback import TrackingCallback
    from tunefleet.trainers.run import TrialRequest, run_trial

    layout = Layout.at(work / "runs").ensure()
    experiment_id, parent = start_sweep_tracking(config, layout) or (None, None)
    started = time.perf_counter()
    tracking = start_trial_tracking(
        config, layout, trial=0, experiment_id=experiment_id, parent_run_id=parent, worker=0
    )
    run_trial(
        config,
        TrialRequest(
            sweep="bench",
            number=0,
            params={},
            checkpoint_dir=work / "ckpt",
            work_dir=work / "work",
            cache_dir=None,
            report=lambda e, v: False,
            callbacks=[TrackingCallback(tracking.bus)],
        ),
    )
    tracking.bus.close()
    return time.perf_counter() - started


def without_tracking(config, work: Path) -> float:  # type: ignore[no-untyped-def]
    """tunefleet's training path with both trackers off: what the checkpointing costs alone."""
    off = config.model_copy(
        update={
            "tracking": config.tracking.model_validate(
                {"mlflow": {"enabled": False}, "wandb": {"enabled": False}}
            )
        }
    )
    return through_tunefleet(off, work)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    from tunefleet.platform.worker import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.csv"
        lines = DATA.read_text(encoding="utf-8").splitlines(keepends=True)
        data.write_text("".join(lines[: args.rows + 1]), encoding="utf-8")
        config = config_for(args, data)
        sides = (
            ("bare", bare_trainer),
            ("untracked", without_tracking),
            ("tunefleet", through_tunefleet),
        )
        times: dict[str, list[float]] = {side: [] for side, _ in sides}
        for repeat in range(args.repeats):
            for side, run in sides:
                work = Path(tempfile.mkdtemp(dir=tmp))
                times[side].append(run(config, work))
                print(f"repeat {repeat}: {side:9s} {times[side][-1]:7.2f}s", flush=True)
    bare, ours = statistics.median(times["bare"]), statistics.median(times["tunefleet"])
    untracked = statistics.median(times["untracked"])
    print(
        f"\nmodel {args.model}, {args.rows} rows, {args.epochs} epoch(s), torch threads "
        f"{__import__('torch').get_num_threads()}, python {sys.version.split()[0]}"
    )
    print(f"bare HF Trainer (report_to=[]): median {bare:.2f}s")
    print(
        f"tunefleet, trackers off (best checkpoint only): median {untracked:.2f}s "
        f"= {untracked / bare:.3f}x bare"
    )
    print(f"tunefleet trial (MLflow sqlite + W&B offline + checkpoint): median {ours:.2f}s")
    print(f"ratio tunefleet / bare: {ours / bare:.3f}x")


if __name__ == "__main__":
    main()
