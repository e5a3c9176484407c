"""The ``tunefleet`` command line. User mistakes exit 2 with a message naming what to fix."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tunefleet.config import describe_options, json_schema, load_config
from tunefleet.errors import TunefleetError
from tunefleet.platform.layout import Layout

DEFAULT_OUT = "runs"


def _options_epilog() -> str:
    lines = ["config keys (YAML; any train.*/model.*/data.* leaf can be searched in search.space):"]
    for key, kind, text in describe_options():
        lines.append(f"  {key}  ({kind})")
        lines.extend(
            textwrap.wrap(text, width=96, initial_indent="      ", subsequent_indent="      ")
        )
    return "\n".join(lines)


def _store_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="folder of the embedded default: tunefleet.db, mlflow.db, wandb/, "
        "checkpoints/ (default: ./runs)",
    )
    parser.add_argument(
        "--db",
        default=None,
        help="study-and-store database URL (default: sqlite:///OUT/tunefleet.db); "
        "postgresql://... for many workers and hosts",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunefleet",
        description="Hyperparameter sweeps for fine-tuning transformers, tracked end to end.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.RawDescriptionHelpFormatter

    p = sub.add_parser(
        "sweep",
        help="launch (or resume) a sweep",
        epilog=_options_epilog(),
        formatter_class=formatter,
    )
    p.add_argument("config", help="the sweep's YAML config")
    p.add_argument("--name", help="sweep name (default: the config's `name`)")
    _store_args(p)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes (one per GPU, or a share of the CPU threads each); default 1",
    )
    p.add_argument("--trials", type=int, help="trials in total, counting a resumed sweep's")
    p.add_argument("--timeout", type=float, help="seconds after which no new trial starts")

    p = sub.add_parser("worker", help="join a running sweep (from another shell or host)")
    p.add_argument("name")
    _store_args(p)
    p.add_argument("--index", type=int, default=None, help="worker index (sampler seed offset)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for this worker")
    p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)

    p = sub.add_parser("status", help="trials, states and the best so far")
    p.add_argument("name")
    _store_args(p)
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")

    p = sub.add_parser("compare", help="trials sorted by the objective; --html for plots")
    p.add_argument("name")
    _store_args(p)
    p.add_argument("--html", type=Path, help="write a self-contained HTML report here")

    p = sub.add_parser("promote", help="register the best checkpoint under a registry alias")
    p.add_argument("name")
    _store_args(p)
    p.add_argument("--trial", type=int, help="promote this trial instead of the best")
    p.add_argument("--alias", default="champion", help="registry alias (default: champion)")

    p = sub.add_parser("predict", help="run a promoted model or a checkpoint folder on texts")
    p.add_argument("model", help="NAME@ALIAS (a promoted model) or a checkpoint folder")
    p.add_argument("texts", nargs="+", metavar="TEXT")
    _store_args(p)
    p.add_argument("--json", action="store_true", help="JSON lines on stdout")

    p = sub.add_parser(
        "validate",
        help="check a config and its data; nothing runs",
        epilog=_options_epilog(),
        formatter_class=formatter,
    )
    p.add_argument("config")

    sub.add_parser("schema", help="print the config's JSON schema (for editor completion)")
    return parser


def _layout_db(args: argparse.Namespace) -> tuple[Layout, str]:
    layout = Layout.at(args.out)
    return layout, args.db or layout.db_url


def _existing_store(args: argparse.Namespace) -> Any:
    from tunefleet.platform.store import Store

    layout, db = _layout_db(args)
    if args.db is None and not (layout.out / "tunefleet.db").is_file():
        raise TunefleetError(f"no sweeps under {layout.out} (no tunefleet.db); pass --out or --db")
    return Store(db)


def cmd_validate(args: argparse.Namespace) -> int:
    from tunefleet.platform.checks import check_sweep

    config = load_config(args.config)
    splits = check_sweep(config)
    print(
        f"{args.config}: valid. {len(splits.train)} train / {len(splits.eval)} eval"
        + (f" / {len(splits.test)} test" if splits.test else "")
        + f" rows, labels {list(splits.label_names)}, {len(config.search.space)} searched keys"
    )
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(json_schema(), indent=2))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from tunefleet.platform.launcher import run_sweep

    if args.workers < 1:
        raise TunefleetError(f"--workers must be at least 1, got {args.workers}")
    overrides = {
        k: v
        for k, v in (
            ("name", args.name),
            ("search.trials", args.trials),
            ("search.timeout", args.timeout),
        )
        if v is not None
    }
    config = load_config(args.config, overrides=overrides)
    layout, db = _layout_db(args)
    return run_sweep(config, layout=layout, db_url=db, workers=args.workers)


def cmd_worker(args: argparse.Namespace) -> int:
    from tunefleet.platform.worker import WorkerOptions, worker_main

    layout, db = _layout_db(args)
    index = args.index if args.index is not None else os.getpid()
    return worker_main(
        WorkerOptions(
            name=args.name,
            layout=layout,
            db_url=db,
            index=index,
            threads=args.threads,
            deadline=args.deadline,
        )
    )


def cmd_status(args: argparse.Namespace) -> int:
    from tunefleet.platform.status import open_view, status_json, table

    store = _existing_store(args)
    view = open_view(store, args.name, _layout_db(args)[1])
    if args.json:
        print(json.dumps(status_json(view), indent=2, default=str))
        return 0
    info = status_json(view)
    counts: dict[str, int] = {}
    for trial in info["trials"]:
        counts[trial["state"]] = counts.get(trial["state"], 0) + 1
    print(f"sweep {args.name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    print(table(view))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tunefleet.platform.status import open_view, table, write_report

    store = _existing_store(args)
    view = open_view(store, args.name, _layout_db(args)[1])
    print(table(view))
    if args.html:
        print(f"report: {write_report(view, args.html)}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from tunefleet.platform.promote import describe, promote
    from tunefleet.platform.status import open_view

    store = _existing_store(args)
    layout, db = _layout_db(args)
    view = open_view(store, args.name, db)
    print(describe(promote(view, store, layout, trial=args.trial, alias=args.alias)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from tunefleet.trainers.predict import Predictor

    folder = _model_folder(args)
    predictions = Predictor.from_checkpoint(folder).predict(args.texts)
    for text, prediction in zip(args.texts, predictions, strict=True):
        if args.json:
            print(
                json.dumps(
                    {
                        "text": text,
                        "label": prediction.label,
                        "probabilities": prediction.probabilities,
                    }
                )
            )
        else:
            print(f"{prediction.label}\t{prediction.probabilities[prediction.label]:.3f}\t{text}")
    return 0


def _model_folder(args: argparse.Namespace) -> Path:
    from tunefleet.errors import NotFoundError

    if Path(args.model).is_dir():
        return Path(args.model)
    if "@" not in args.model:
        raise NotFoundError(f"{args.model!r} is neither a checkpoint folder nor NAME@ALIAS")
    name, alias = args.model.split("@", 1)
    promotion = _existing_store(args).promotion(name, alias=alias)
    if promotion is None:
        raise NotFoundError(
            f"nothing promoted as {name}@{alias}; run `tunefleet promote {name}` first"
        )
    return Path(promotion.checkpoint)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "validate": cmd_validate,
    "schema": cmd_schema,
    "sweep": cmd_sweep,
    "worker": cmd_worker,
    "status": cmd_status,
    "compare": cmd_compare,
    "promote": cmd_promote,
    "predict": cmd_predict,
}


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        return COMMANDS[args.command](args)
    except TunefleetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if os.environ.get("TUNEFLEET_TIMING"):
            print(f"[{args.command} took {time.time() - started:.1f}s]", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
