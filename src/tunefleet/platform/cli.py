"""The ``tunefleet`` command line. User mistakes exit 2 with a message naming what to fix.

A command is a ``cmd_*`` function plus one row of ``COMMAND_TABLE`` (its summary, arguments and
exit codes); the parser and ``tunefleet --help`` are built from the table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tunefleet.config import describe_options, json_schema, load_config
from tunefleet.errors import ConfigError, TunefleetError
from tunefleet.platform.layout import Layout, mlflow_tracking_uri
from tunefleet.redaction import SECRETS_ENV, redact_text, secret_params

if TYPE_CHECKING:
    from tunefleet.platform.sync import SpoolSync

DEFAULT_OUT = "runs"
DESCRIPTION = "Hyperparameter sweeps for fine-tuning transformers, tracked end to end."
COMMON_EXITS = "0 done; 2 a mistake to fix (a bad flag, or an error on stderr naming it)"


@dataclass(frozen=True)
class Arg:
    """One ``add_argument`` call: the flags (or a positional's name) and its options."""

    flags: tuple[str, ...]
    options: Mapping[str, Any] = field(default_factory=dict)


def arg(*flags: str, **options: Any) -> Arg:
    return Arg(flags, options)


@dataclass(frozen=True)
class Command:
    """Everything ``tunefleet`` knows about one command.

    ``config``, when given, is the help of a leading ``config`` argument (a YAML file); the
    command's ``--help`` then lists every config key. ``exits`` names the exit codes beyond
    :data:`COMMON_EXITS`.
    """

    name: str
    run: Callable[[argparse.Namespace], int]
    summary: str
    args: tuple[Arg, ...] = ()
    config: str | None = None
    exits: str = ""

    def add_to(self, sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        extra: dict[str, Any] = {}
        if self.config is not None:
            extra = {
                "epilog": _options_epilog(),
                "formatter_class": argparse.RawDescriptionHelpFormatter,
            }
        parser = sub.add_parser(self.name, help=self.summary, **extra)
        if self.config is not None:
            parser.add_argument("config", help=self.config)
        for argument in self.args:
            parser.add_argument(*argument.flags, **argument.options)


def _options_epilog() -> str:
    lines = ["config keys (YAML; any train.*/model.*/data.* leaf can be searched in search.space):"]
    for key, kind, text in describe_options():
        lines.append(f"  {key}  ({kind})")
        lines.extend(
            textwrap.wrap(text, width=96, initial_indent="      ", subsequent_indent="      ")
        )
    return "\n".join(lines)


def _exits_epilog(commands: Sequence[Command]) -> str:
    width = max(len(c.name) for c in commands)
    lines = [f"exit codes: {COMMON_EXITS}; besides:"]
    lines.extend(f"  {c.name:<{width}}  {c.exits}" for c in commands if c.exits)
    return "\n".join(lines)


STORE_ARGS = (
    arg(
        "--out",
        default=DEFAULT_OUT,
        help="folder of the embedded default: tunefleet.db, mlflow.db, wandb/, "
        "checkpoints/ (default: ./runs)",
    ),
    arg(
        "--db",
        default=None,
        help="study-and-store database URL (default: sqlite:///OUT/tunefleet.db); "
        "postgresql://... for many workers and hosts",
    ),
)
# A command on an existing sweep: its name, then where its store is.
SWEEP_ARGS = (arg("name"), *STORE_ARGS)


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
    if config.search.warm_start is not None:
        from tunefleet.platform.checks import check_warm_start

        print(check_warm_start(config, _layout_db(args)[1]))
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
    return run_sweep(
        config, layout=layout, db_url=db, workers=args.workers, placement=_placement(args)
    )


def _placement(args: argparse.Namespace) -> Any:
    from tunefleet.platform.launcher import Placement

    for flag, value in (
        ("--gpus-per-trial", args.gpus_per_trial),
        ("--cpus-per-trial", args.cpus_per_trial),
    ):
        if value is not None and value < 1:
            raise TunefleetError(f"{flag} must be at least 1, got {value}")
    if args.engine == "local" and (args.address is not None or args.cpus_per_trial is not None):
        raise TunefleetError(
            "--address and --cpus-per-trial place Ray actors: add --engine ray (the local engine "
            "splits this machine's CPU threads between --workers itself)"
        )
    return Placement(
        engine=args.engine,
        address=args.address,
        gpus_per_trial=args.gpus_per_trial,
        cpus_per_trial=args.cpus_per_trial,
    )


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
            secrets=_worker_secrets(args.config),
        )
    )


def _worker_secrets(config_file: Path | None) -> dict[str, Any]:
    """The secrets a worker fills into its stored config: ``$TUNEFLEET_SECRETS`` (set by the
    launcher), overridden by those of ``--config``."""
    # Popped so that processes this one starts (W&B's service, data loaders) never hold them.
    raw = os.environ.pop(SECRETS_ENV, None)
    secrets: dict[str, Any] = {}
    if raw:
        try:
            given = json.loads(raw)
        except json.JSONDecodeError:
            given = None
        if not isinstance(given, dict):
            raise ConfigError(
                [(SECRETS_ENV, "must be a JSON object of dotted config path -> value")]
            )
        secrets.update(given)
    if config_file is not None:
        secrets.update(secret_params(load_config(config_file)))
    return secrets


def cmd_train(args: argparse.Namespace) -> int:
    from tunefleet.platform.single import train

    overrides = {"name": args.name} if args.name else {}
    return train(load_config(args.config, overrides=overrides), Layout.at(args.out))


def cmd_sync(args: argparse.Namespace) -> int:
    from tunefleet.platform.sync import sync

    layout = Layout.at(args.out)
    known = {mlflow_tracking_uri(layout)}
    if args.config is not None:
        known.add(mlflow_tracking_uri(layout, load_config(args.config)))
    store = _existing_store(args) if args.db or (layout.out / "tunefleet.db").is_file() else None
    if args.name:
        _require_spools(layout, args.name)
    results = sync(layout, name=args.name, known_uris=known, store=store)
    if not results:
        print(f"no spools under {layout.spool_root}: nothing to send")
        return 0
    for result in results:
        print(_sync_line(result))
    return 0 if all(r.complete or r.skipped for r in results) else 1


def _require_spools(layout: Layout, name: str) -> None:
    if layout.spool_dir(name).is_dir():
        return
    from tunefleet.errors import NotFoundError

    found = sorted(p.name for p in layout.spool_root.glob("*") if p.is_dir())
    raise NotFoundError(
        f"no spools of sweep {name!r} under {layout.spool_root}; "
        + (f"sweeps with spools: {', '.join(found)}" if found else "none there at all")
    )


def _sync_line(result: SpoolSync) -> str:
    """What ``tunefleet sync`` prints of one spool."""
    if result.skipped:
        return f"{result.spool.name}: skipped, {result.skipped}"
    sent = ", ".join(f"{k} {v}" for k, v in sorted(result.sent.items())) or "nothing"
    line = f"{result.spool.parent.name}/{result.spool.name}: sent {sent}"
    left = {k: v for k, v in result.left.items() if v}
    if left or result.errors:
        line += f"; left {left or ''} {result.errors}"
    return line


def cmd_status(args: argparse.Namespace) -> int:
    from tunefleet.platform.progress import duration
    from tunefleet.platform.status import cost_lines, open_view, status_json, table

    store = _existing_store(args)
    layout, db = _layout_db(args)
    view = open_view(store, args.name, db, layout=layout)
    if args.json:
        print(json.dumps(status_json(view), indent=2, default=str))
        return 0
    info = status_json(view)
    counts: dict[str, int] = {}
    for trial in info["trials"]:
        counts[trial["state"]] = counts.get(trial["state"], 0) + 1
    line = f"sweep {args.name}: " + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items()))
    if info["eta_s"] is not None:
        line += f"; budget {info['budget']}, ETA {duration(info['eta_s'])}"
    print(line)
    if info["history"]:
        print(f"+ {info['history']['trials']} trials of history from {info['history']['from']}")
    print(table(view))
    for line in cost_lines(view):
        print(line)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from tunefleet.platform.status import cost_lines, open_view, table, write_report

    store = _existing_store(args)
    layout, db = _layout_db(args)
    view = open_view(store, args.name, db, layout=layout)
    print(table(view))
    for line in cost_lines(view):
        print(line)
    if args.html:
        print(f"report: {write_report(view, args.html)}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from tunefleet.platform.promote import describe, promote
    from tunefleet.platform.status import open_view

    store = _existing_store(args)
    layout, db = _layout_db(args)
    view = open_view(store, args.name, db)
    if args.reason is not None and not args.force:
        raise TunefleetError("--reason goes with --force (why the gate is overridden)")
    if args.alias is None:
        return _promote_gated(args, view, store, layout)
    if args.force or args.test:
        raise TunefleetError("--force and --test go with the gate: leave out --alias")
    outcome = promote(view, store, layout, trial=args.trial, alias=args.alias, prefer=args.prefer)
    print(describe(outcome))
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


def cmd_export(args: argparse.Namespace) -> int:
    from tunefleet.platform.export import export_checkpoint, trial_metrics

    folder = _model_folder(args)
    try:
        store = _existing_store(args)
    except TunefleetError:
        store = None  # a bare folder with no store beside it: the card says test figures unknown
    metrics = trial_metrics(store, folder) if store is not None else None
    outcome = export_checkpoint(folder, Path(args.dest), fmt=args.format, metrics=metrics)
    print(
        f"exported the {outcome.method} checkpoint {folder} as {outcome.format} to "
        f"{outcome.dest} (checked: max |logit diff| {outcome.max_diff:.2g})"
    )
    return 0


SERVE_EXTRA = "pip install 'tunefleet[serve]'"


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from tunefleet.platform.serving.server import serve
    except ImportError as exc:
        raise TunefleetError(
            f"tunefleet serve needs FastAPI, uvicorn and prometheus_client ({exc.name} is "
            f"missing): {SERVE_EXTRA}"
        ) from None
    from tunefleet.platform.serving.limits import Limits

    try:
        limits = Limits(
            max_body_bytes=args.max_body_kb * 1024,
            max_batch=args.max_batch,
            batch_wait_s=args.batch_wait_ms / 1000,
            max_concurrency=args.max_concurrency,
            timeout_s=args.timeout_s,
            truncate=not args.no_truncate,
        )
    except ValueError as exc:
        raise TunefleetError(f"tunefleet serve: {exc}") from None
    if args.reload_poll_s <= 0:
        raise TunefleetError(f"--reload-poll-s must be > 0; got {args.reload_poll_s:g}")
    serve(
        args.model,
        store=lambda: _existing_store(args),
        host=args.host,
        port=args.port,
        limits=limits,
        reload_every_s=args.reload_poll_s if args.reload_on_alias_change else None,
        log_level=args.log_level,
    )
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    from tunefleet.platform.retention import run_gc

    layout, _ = _layout_db(args)
    for line in run_gc(_existing_store(args), layout, args.name, dry_run=args.dry_run):
        print(line)
    return 0


def cmd_pin(args: argparse.Namespace) -> int:
    import getpass

    from tunefleet.platform.retention import pin

    store = _existing_store(args)
    print(pin(store, args.name, args.trial, actor=getpass.getuser(), reason=args.reason))
    return 0


def cmd_unpin(args: argparse.Namespace) -> int:
    from tunefleet.platform.retention import unpin

    print(unpin(_existing_store(args), args.name, args.trial))
    return 0


def _promote_gated(args: argparse.Namespace, view: Any, store: Any, layout: Layout) -> int:
    from tunefleet.platform.promote import describe_gated, promote_gated

    if args.force and not (args.reason or "").strip():
        raise TunefleetError("--force needs --reason TEXT: why the gate is overridden (recorded)")
    outcome = promote_gated(
        view,
        store,
        layout,
        trial=args.trial,
        prefer=args.prefer,
        test=args.test,
        force_reason=args.reason if args.force else None,
    )
    print(describe_gated(outcome))
    return 0 if outcome.moved else 1


def cmd_rollback(args: argparse.Namespace) -> int:
    from tunefleet.platform.rollback import describe_rollback, rollback
    from tunefleet.platform.status import open_view

    store = _existing_store(args)
    layout, db = _layout_db(args)
    view = open_view(store, args.name, db)
    print(describe_rollback(rollback(view, store, layout, to=args.to, reason=args.reason)))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from tunefleet.platform.history import history_json, history_text

    moves = _existing_store(args).alias_moves(args.name)
    if args.json:
        print(json.dumps(history_json(moves), indent=2))
    else:
        print(history_text(args.name, moves))
    return 0


COMMAND_TABLE: tuple[Command, ...] = (
    Command(
        "sweep",
        cmd_sweep,
        "launch (or resume) a sweep",
        config="the sweep's YAML config",
        args=(
            arg("--name", help="sweep name (default: the config's `name`)"),
            *STORE_ARGS,
            arg(
                "--workers",
                type=int,
                default=1,
                help="worker processes (one per GPU, or a share of the CPU threads each); "
                "default 1",
            ),
            arg(
                "--engine",
                choices=("local", "ray"),
                default="local",
                help="local: worker processes on this machine (default); ray: workers as Ray "
                "actors on a cluster (pip install 'tunefleet[ray]'; docs/cluster.md)",
            ),
            arg(
                "--address",
                default=None,
                help="with --engine ray: the cluster (auto, ray://HOST:10001, HOST:6379); "
                "default: start a Ray cluster on this machine",
            ),
            arg(
                "--gpus-per-trial",
                type=int,
                default=None,
                help="GPUs each worker gets (local: disjoint sets from CUDA_VISIBLE_DEVICES, "
                "more workers than sets refused; ray: the actor's num_gpus)",
            ),
            arg(
                "--cpus-per-trial",
                type=int,
                default=None,
                help="with --engine ray: CPUs each actor reserves and its torch threads "
                "(default 1)",
            ),
            arg("--trials", type=int, help="trials in total, counting a resumed sweep's"),
            arg("--timeout", type=float, help="seconds after which no new trial starts"),
        ),
        exits="1 no trial completed, or a worker failed; 75 paused: the disk cannot hold a "
        "checkpoint (free space, then run it again); 130 interrupted (run it again to resume)",
    ),
    Command(
        "worker",
        cmd_worker,
        "join a running sweep (from another shell or host)",
        args=(
            *SWEEP_ARGS,
            arg("--index", type=int, default=None, help="worker index (sampler seed offset)"),
            arg("--threads", type=int, default=None, help="CPU threads for this worker"),
            arg("--deadline", type=float, default=None, help=argparse.SUPPRESS),
            arg(
                "--config",
                type=Path,
                default=None,
                help="the sweep's YAML, read only for the secrets (model.token, passwords in "
                "URLs) that the store keeps redacted; or pass them as JSON in "
                f"${SECRETS_ENV}",
            ),
        ),
    ),
    Command(
        "train",
        cmd_train,
        "one run with the config's own values (no search), tracked like a sweep's trial",
        config="a YAML config (search.space is ignored)",
        args=(
            arg("--name", help="experiment name (default: the config's `name`)"),
            arg(
                "--out",
                default=DEFAULT_OUT,
                help="where mlflow.db, wandb/, spool/ and the checkpoint go",
            ),
        ),
    ),
    Command(
        "sync",
        cmd_sync,
        "send what the trackers have not acknowledged (a tracker that was down, a killed "
        "worker) from the spools under --out",
        args=(
            arg("name", nargs="?", help="one sweep (default: every sweep under --out)"),
            *STORE_ARGS,
            arg(
                "--config",
                type=Path,
                default=None,
                help="the sweep's YAML, read only for a tracker URI whose password the spool "
                "keeps redacted (or set MLFLOW_TRACKING_URI)",
            ),
        ),
        exits="1 something is still not delivered (run it again once the tracker answers)",
    ),
    Command(
        "status",
        cmd_status,
        "trials, states and the best so far",
        args=(
            *SWEEP_ARGS,
            arg("--json", action="store_true", help="one JSON object on stdout"),
        ),
    ),
    Command(
        "compare",
        cmd_compare,
        "trials sorted by the objective; --html for plots",
        args=(
            *SWEEP_ARGS,
            arg("--html", type=Path, help="write a self-contained HTML report here"),
        ),
    ),
    Command(
        "promote",
        cmd_promote,
        "register the best checkpoint as @challenger and, if it passes the gate "
        "(promotion:), make it @champion",
        args=(
            *SWEEP_ARGS,
            arg("--trial", type=int, help="promote this trial instead of the best"),
            arg(
                "--prefer",
                metavar="METRIC",
                help="multi-objective sweeps: promote the Pareto front member best in this "
                "objective (ties: the first objective); one of --trial or --prefer is needed there",
            ),
            arg(
                "--alias",
                default=None,
                help="register under this alias without the gate (not champion, challenger or "
                "previous-champion); default: the gated challenger -> champion flow",
            ),
            arg(
                "--test",
                type=Path,
                default=None,
                help="the frozen test set (.csv/.jsonl with the data's columns) to gate on "
                "(default: the sweep's held-out data.test split)",
            ),
            arg("--force", action="store_true", help="move @champion even if the gate fails"),
            arg("--reason", default=None, help="why --force overrides the gate (recorded)"),
        ),
        exits="1 the gate failed: @champion did not move (the output names the failed checks)",
    ),
    Command(
        "predict",
        cmd_predict,
        "run a promoted model or a checkpoint folder on texts",
        args=(
            arg("model", help="NAME@ALIAS (a promoted model) or a checkpoint folder"),
            arg("texts", nargs="+", metavar="TEXT"),
            *STORE_ARGS,
            arg("--json", action="store_true", help="JSON lines on stdout"),
        ),
    ),
    Command(
        "validate",
        cmd_validate,
        "check a config and its data (and search.warm_start's sweep in --db); nothing runs",
        config="the config",
        args=STORE_ARGS,
    ),
    Command("schema", cmd_schema, "print the config's JSON schema (for editor completion)"),
    Command(
        "export",
        cmd_export,
        "write a promoted model or a checkpoint folder as a Hugging Face model, a peft adapter "
        "or an ONNX graph, checked to give the checkpoint's logits",
        args=(
            arg("model", help="NAME@ALIAS (a promoted model) or a checkpoint folder"),
            arg("dest", help="folder to create (must not exist)"),
            arg(
                "--format",
                required=True,
                choices=("hf", "peft", "onnx"),
                help="hf: standalone transformers model (merged LoRA/IA3; full, unfreeze, dann); "
                "peft: adapter + base reference (lora, ia3, prefix, prompt); onnx: any method",
            ),
            *STORE_ARGS,
        ),
    ),
    Command(
        "gc",
        cmd_gc,
        "delete checkpoints that retention (the config's checkpoints: section) lets go",
        args=(
            *SWEEP_ARGS,
            arg("--dry-run", action="store_true", help="print what would go and the bytes freed"),
        ),
    ),
    Command(
        "pin",
        cmd_pin,
        "keep a trial's checkpoint whatever retention says",
        args=(
            *SWEEP_ARGS[:1],
            arg("trial", type=int, help="the trial's number (as status shows it)"),
            *STORE_ARGS,
            arg("--reason", default=None, help="why it is kept (shown by status --json)"),
        ),
    ),
    Command(
        "unpin",
        cmd_unpin,
        "let retention delete a pinned trial's checkpoint again",
        args=(*SWEEP_ARGS[:1], arg("trial", type=int, help="the trial's number"), *STORE_ARGS),
    ),
    Command(
        "serve",
        cmd_serve,
        f"an HTTP server for a promoted model or a checkpoint folder ({SERVE_EXTRA})",
        args=(
            arg("model", help="NAME@ALIAS (a promoted model) or a checkpoint folder"),
            *STORE_ARGS,
            arg("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"),
            arg("--port", type=int, default=8000, help="port (default 8000)"),
            arg(
                "--max-body-kb",
                type=int,
                default=1024,
                help="larger request bodies are refused with 413 (default 1024)",
            ),
            arg(
                "--max-batch",
                type=int,
                default=32,
                help="most texts per request (more: 413) and per model call (default 32)",
            ),
            arg(
                "--batch-wait-ms",
                type=float,
                default=5.0,
                help="how long the oldest waiting request waits for others to share its model "
                "call (default 5)",
            ),
            arg(
                "--max-concurrency",
                type=int,
                default=64,
                help="requests in flight beyond this are refused with 429 (default 64)",
            ),
            arg(
                "--timeout-s",
                type=float,
                default=30.0,
                help="a request not answered in this many seconds gets 503 (default 30)",
            ),
            arg(
                "--no-truncate",
                action="store_true",
                help="refuse (422) texts longer than the model's max_length instead of "
                "truncating them",
            ),
            arg(
                "--reload-on-alias-change",
                action="store_true",
                help="poll NAME@ALIAS and swap to a newly promoted model without dropping a "
                "request (the old one answers until the new one is loaded and warmed)",
            ),
            arg(
                "--reload-poll-s",
                type=float,
                default=10.0,
                help="seconds between alias polls (default 10)",
            ),
            arg(
                "--log-level",
                choices=("debug", "info", "warning", "error"),
                default="info",
                help="server log level (default info)",
            ),
        ),
    ),
    Command(
        "rollback",
        cmd_rollback,
        "move @champion back (default: to @previous-champion) once the target is checked",
        args=(
            *SWEEP_ARGS,
            arg("--to", metavar="VERSION", default=None, help="the model version to restore"),
            arg("--reason", default=None, help="why (recorded in the alias history)"),
        ),
    ),
    Command(
        "history",
        cmd_history,
        "every alias move of a registered model: who, when, from, to, the gate or the reason",
        args=(
            arg("name", help="the registered model (a sweep's name)"),
            *STORE_ARGS,
            arg("--json", action="store_true", help="a JSON list on stdout"),
        ),
    ),
)


def index_commands(commands: Sequence[Command]) -> dict[str, Command]:
    """The commands by name; a name twice in the table is a mistake caught at import."""
    by_name: dict[str, Command] = {}
    for command in commands:
        if command.name in by_name:
            raise ValueError(f"command {command.name!r} is in the table twice")
        by_name[command.name] = command
    return by_name


COMMANDS = index_commands(COMMAND_TABLE)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tunefleet",
        description=DESCRIPTION,
        epilog=_exits_epilog(COMMAND_TABLE),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMAND_TABLE:
        command.add_to(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    started = time.time()
    try:
        return COMMANDS[args.command].run(args)
    except TunefleetError as exc:
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    finally:
        if os.environ.get("TUNEFLEET_TIMING"):
            print(f"[{args.command} took {time.time() - started:.1f}s]", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
