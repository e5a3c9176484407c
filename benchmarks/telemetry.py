"""What tunefleet's telemetry costs a trial, and how fast its spool and sinks move points.

1. Trial wall time, three sides interleaved (the order rotates each repeat), each side's median:
   - bare: HF Trainer with ``report_to=[]``, evaluating every epoch with the same metrics;
   - hf: the same Trainer with ``report_to=["wandb", "mlflow"]`` (HF's WandbCallback and
     MLflowCallback; MLflow on a sqlite file, W&B offline), each run's MLflow and W&B runs ended;
   - full: a tunefleet sweep trial (``run_trial``) with all its telemetry: MLflow child run on
     sqlite, W&B offline, the store's live summary on a sqlite store, grouped gradient norms and
     system metrics at the default interval, timed up to ``RunTracking.close`` returning (which
     waits for every sink to catch up); it also writes its best checkpoint, as every trial does
     (``--with-untracked`` adds overhead.py's trackers-off side to tell the two apart).
   Same model, rows, batch size, learning rate, seed and logging interval on every side. Before
   any timing, every side runs once untimed on a few rows (first-run costs of the process).
2. The tracking callback's time per ``on_log`` on the training thread, from the full runs.
3. Spool ingest: points per second ``TelemetryBus.emit`` accepts on the calling thread, in groups
   shaped like a logging step, with no sinks and with a trial's real sinks.
4. Delivery: points per second from a spool to MLflow on sqlite and to a real ``mlflow server``
   over HTTP, checked against what the run holds afterwards.
5. A tracking server that accepts connections and never answers (``outage``): the training
   steps' durations and the trial's wall time against the same trial with MLflow on sqlite.
6. Grouped gradient norms (``norms``): the per-step cost against HF's ``clip_grad_norm_``.

    python benchmarks/telemetry.py [--model minilm] [--rows 600] [--epochs 1] [--repeats 2]
        [--points 200000] [--delivery-points 20000] [--logging-steps 5] [--with-untracked]
        [--parts trials,ingest,delivery,outage,norms]

Shares overhead.py's pieces (imported from beside this file; importing it also sets the
offline environment defaults).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import math
import os
import secrets
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from overhead import (
    ROOT,
    Side,
    TunefleetRun,
    bare_trainer,
    bench_request,
    config_for,
    environment,
    interleave,
    open_sweep,
    sample_rows,
    trial_parser,
    tunefleet_trial,
    without_tracking,
)

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

    from tunefleet.config import SweepConfig
    from tunefleet.tracking.events import Point

HF_EXPERIMENT = "bench-hf"
DELIVERY_EXPERIMENT = "bench-delivery"
STEP_KEYS = ("loss", "learning_rate", "grad_norm", "epoch")
GROUPS = ("embeddings", *(f"block_{i:02d}" for i in range(12)), "head", "other", "lora")
"""A logging step's grouped norms for a 12-block encoder under LoRA (tunefleet.trainers.gradients:
at most 12 block groups, plus embeddings, head, other and the method's own)."""
WARM_MODULES = (
    "mlflow",
    "transformers.integrations",
    "tunefleet.platform.store_sink",
    "tunefleet.platform.run_tracking",
    "tunefleet.trainers.run",
)
WARM_ROWS = 40
"""Rows of the untimed warm-up runs (32 train / 8 eval: two steps)."""
GOAL_RATIO, GOAL_P99_US, GOAL_INGEST = 1.03, 1000.0, 50_000.0
PARTS = ("trials", "ingest", "delivery", "outage", "norms")
OUTAGE_WAIT_S = 5.0
"""tracking.sink_wait_s of the outage part's trials: how long a trial's end waits for MLflow."""


# --- 1. trial wall time ------------------------------------------------------------------------


@contextmanager
def environ(**values: str) -> Iterator[None]:
    """Environment variables set for the block, then restored (tunefleet's side also reads
    MLFLOW_TRACKING_URI, so HF's must not leak into it)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def hf_integrations(config: SweepConfig, work: Path) -> float:
    """HF Trainer with its own W&B and MLflow callbacks, as a user turns them on; the runs are
    ended inside the timing (tunefleet's side waits for its sinks too)."""
    import mlflow
    import wandb

    from tunefleet.tracking.mlflow_sink import ensure_experiment, make_client

    uri = f"sqlite:///{work / 'mlflow.db'}"
    client = make_client(uri)
    # Untimed, like the tunefleet side's experiment and parent run: the tracking database exists.
    experiment = ensure_experiment(
        client, HF_EXPERIMENT, artifact_location=(work / "mlartifacts").as_uri()
    )
    # W&B reads its WANDB_* variables once per process: wandb_environment set them.
    with environ(MLFLOW_TRACKING_URI=uri, MLFLOW_EXPERIMENT_NAME=HF_EXPERIMENT):
        seconds = bare_trainer(config, work / "trainer", report_to=["wandb", "mlflow"])
        started = time.perf_counter()
        mlflow.end_run()  # MLflowCallback ends the run it started; this makes sure of it
        wandb.finish()  # WandbCallback leaves its run open
        seconds += time.perf_counter() - started
    runs = client.search_runs([experiment])
    if [run.info.status for run in runs] != ["FINISHED"] or not runs[0].data.metrics:
        raise SystemExit(f"hf side: expected one finished MLflow run with metrics, got {runs}")
    return seconds


@dataclass
class Trials:
    times: dict[str, list[float]]
    full: list[TunefleetRun]


def trial_sides(runs: list[TunefleetRun], *, untracked: bool) -> list[tuple[str, Side]]:
    """The sides; the full side's runs (with their telemetry) are appended to ``runs``. The
    optional fourth, ``run_trial`` with both trackers off and no store, tells the telemetry's
    share of full / bare from the rest of a trial's extras (the best checkpoint's write)."""

    def full(config: SweepConfig, work: Path) -> float:
        runs.append(tunefleet_trial(config, work, with_store=True))
        return runs[-1].seconds

    sides: list[tuple[str, Side]] = [("bare", bare_trainer), ("hf", hf_integrations)]
    return [*sides, *([("untracked", without_tracking)] if untracked else []), ("full", full)]


def trials(config: SweepConfig, *, repeats: int, folder: Path, untracked: bool) -> Trials:
    runs: list[TunefleetRun] = []
    sides = trial_sides(runs, untracked=untracked)
    times = interleave(sides, config, repeats=repeats, folder=folder, rotate=True)
    return Trials(times, runs)


def wandb_environment(folder: Path) -> None:
    """HF's WandbCallback takes its settings from the environment, which W&B reads when its
    session starts (the first ``wandb.setup``/``init`` of the process) and ignores after.
    tunefleet's W&B sink passes its own directory and project."""
    directory = folder / "wandb-hf"
    directory.mkdir()
    os.environ.update(
        WANDB_MODE="offline",
        WANDB_DIR=str(directory),
        WANDB_PROJECT=HF_EXPERIMENT,
        WANDB_SILENT="true",
    )


def warm_up(args: argparse.Namespace, folder: Path, *, train: bool) -> None:
    """What the first runs in a process pay alone (imports, the W&B service process and, with
    ``train``, the model files into the page cache and first-call initialisation in torch,
    Trainer and the trackers), paid before any timing: every side once, untimed, on a few rows."""
    import wandb

    for module in WARM_MODULES:
        importlib.import_module(module)
    # After mlflow's import (which sets its level): each new database logs two INFO lines.
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    wandb.setup()
    if not train:
        return
    folder.mkdir()
    config = config_for(args, sample_rows(WARM_ROWS, folder), logging_steps=args.logging_steps)
    config = config.model_copy(update={"train": config.train.model_copy(update={"epochs": 1})})
    sides = trial_sides([], untracked=args.with_untracked)
    interleave(sides, config, repeats=1, folder=folder, label="warm-up")


# --- 3. ingest ---------------------------------------------------------------------------------


def step_groups(points: int, per_emit: int) -> list[list[Point]]:
    """``points`` points in groups of ``per_emit``, one group per step, shaped like a logging
    step: loss, learning rate, grad norm, epoch and grouped grad norms."""
    from tunefleet.tracking.events import Point

    keys = [*STEP_KEYS, *(f"grad_norm/{g}" for g in GROUPS)]
    keys += [f"grad_norm/extra_{i:02d}" for i in range(max(0, per_emit - len(keys)))]
    keys = keys[:per_emit]
    groups: list[list[Point]] = []
    for step in range(math.ceil(points / per_emit)):
        size = min(per_emit, points - step * per_emit)
        groups.append([Point.now(k, 1.0 / (step + 1 + i), step) for i, k in enumerate(keys[:size])])
    return groups


def timed_emits(emit: Callable[[list[Point]], None], groups: Sequence[list[Point]]) -> float:
    started = time.perf_counter()
    for group in groups:
        emit(group)
    return time.perf_counter() - started


@dataclass
class Ingest:
    points: int
    no_sinks_s: float
    real_sinks_s: float
    drain_s: float
    delivered: dict[str, int] = field(default_factory=dict)
    undelivered: dict[str, int] = field(default_factory=dict)


def ingest(config: SweepConfig, *, points: int, per_emit: int, folder: Path) -> Ingest:
    """The same pre-built points emitted twice: into a bus with no sinks (spool append and queue
    only), then into a trial's bus with its real sinks delivering on the bus thread meanwhile."""
    from tunefleet.platform.layout import Layout
    from tunefleet.tracking.bus import TelemetryBus
    from tunefleet.tracking.spool import Cursors, SpoolWriter, sibling

    groups = step_groups(points, per_emit)
    spool = folder / "no-sinks.spool"
    bus = TelemetryBus(SpoolWriter(spool, {"sinks": {}}), [], Cursors(sibling(spool, ".cursors")))
    no_sinks = timed_emits(bus.emit, groups)
    bus.close()

    # Every sink must catch up here, however long that takes: delivery is what the bus thread
    # does while the points are emitted.
    patient = config.model_copy(
        update={"tracking": config.tracking.model_copy(update={"sink_wait_s": 3600.0})}
    )
    sweep = open_sweep(patient, Layout.at(folder / "ingest").ensure(), with_store=True)
    tracking = sweep.start_trial()
    real_sinks = timed_emits(tracking.bus.emit, groups)
    started = time.perf_counter()
    undelivered = tracking.close("FINISHED")
    drain = time.perf_counter() - started
    sweep.close()
    return Ingest(points, no_sinks, real_sinks, drain, dict(tracking.bus.delivered), undelivered)


# --- 4. delivery -------------------------------------------------------------------------------


@dataclass
class Delivery:
    target: str
    points: int
    batches: int
    seconds: float
    read_s: float
    verified: int


def delivery(
    client: MlflowClient,
    target: str,
    *,
    points: int,
    per_emit: int,
    folder: Path,
    artifact_location: str | None,
) -> Delivery:
    """``points`` points spooled, read back and delivered in MAX_BATCH batches to a new MLflow
    run (created by the sink on its first write, inside the timing); then the run must hold
    exactly those values."""
    from tunefleet.tracking.events import RunInfo
    from tunefleet.tracking.mlflow_sink import MlflowSink, ensure_experiment
    from tunefleet.tracking.sinks import batches, deliver
    from tunefleet.tracking.spool import Cursors, SpoolWriter, read_items, sibling

    folder.mkdir(parents=True, exist_ok=True)
    spool = folder / "delivery.spool"
    writer = SpoolWriter(spool, {"sinks": {}})
    groups = step_groups(points, per_emit)
    for group in groups:
        writer.write(group)
    writer.close()
    started = time.perf_counter()
    items = list(read_items(spool))
    read_s = time.perf_counter() - started

    experiment_id = ensure_experiment(
        client, DELIVERY_EXPERIMENT, artifact_location=artifact_location
    )
    info = RunInfo(sweep=DELIVERY_EXPERIMENT, trial=0, method="full", params={})
    sink = MlflowSink(
        client,
        info=info,
        experiment_id=experiment_id,
        parent_run_id=None,
        spool_id=secrets.token_hex(8),
        artifacts=folder / "artifacts",
        state={},
    )
    cursors = Cursors(sibling(spool, ".cursors.json"))
    chunks = batches(items)
    started = time.perf_counter()
    sent = sum(deliver(sink, chunk, cursors) for chunk in chunks)
    seconds = time.perf_counter() - started

    assert sink.run_id is not None
    held = {
        key: len(client.get_metric_history(sink.run_id, key))
        for key in client.get_run(sink.run_id).data.metrics
    }
    expected = {p.key for p in groups[0]}
    if sent != points or sum(held.values()) != points or set(held) != expected:
        raise SystemExit(
            f"delivery to {target}: sent {sent} of {points} points, but the run holds "
            f"{sum(held.values())} values under {sorted(held)}"
        )
    if cursors.offset("mlflow") != spool.stat().st_size:
        raise SystemExit(f"delivery to {target}: the cursor did not reach the spool's end")
    return Delivery(target, points, len(chunks), seconds, read_s, sum(held.values()))


def deliveries(*, points: int, per_emit: int, folder: Path) -> list[Delivery]:
    from tunefleet.tracking.mlflow_sink import fail_fast_http, make_client

    fail_fast_http()
    sqlite = folder / "sqlite"
    sqlite.mkdir(parents=True)
    results = [
        delivery(
            make_client(f"sqlite:///{sqlite / 'mlflow.db'}"),
            "MLflow sqlite",
            points=points,
            per_emit=per_emit,
            folder=sqlite,
            artifact_location=(sqlite / "mlartifacts").as_uri(),
        )
    ]
    sys.path.insert(0, str(ROOT / "tests"))
    from support.mlflow_server import MlflowServer

    server = MlflowServer(folder / "server").start()
    try:
        url = server.wait()
        results.append(
            delivery(
                make_client(url),
                "mlflow server (HTTP)",
                points=points,
                per_emit=per_emit,
                folder=folder / "http",
                artifact_location=None,
            )
        )
    finally:
        server.stop()
    return results


# --- summary -----------------------------------------------------------------------------------


# --- 6. grouped gradient norms ---------------------------------------------------------------


def gradient_norms(model_name: str, *, calls: int = 200) -> dict[str, float]:
    """Seconds per optimizer step of what each side does there: HF's global norm and clip
    (``clip_grad_norm_``) against tunefleet's grouped norms (``GradientGroups.measure``, one fused
    ``_foreach_norm`` and a scatter-add) plus the clip with that total, on the model's real
    gradients after one backward pass."""
    import torch

    from tunefleet.trainers.gradients import GradientGroups
    from tunefleet.trainers.model import load_classifier, load_tokenizer, resolve_model

    resolved = resolve_model(model_name)
    model = load_classifier(resolved, ["0", "1"])
    batch = load_tokenizer(resolved)(["good food"] * 16, return_tensors="pt", padding=True)
    model(**batch, labels=torch.zeros(16, dtype=torch.long)).loss.backward()
    groups = GradientGroups(model)
    params = groups.with_grad()

    def hf() -> None:
        torch.nn.utils.clip_grad_norm_(params, 1.0)

    def grouped() -> None:
        torch.nn.utils.clip_grads_with_norm_(params, 1.0, groups.measure())
        groups.as_logs()  # the host copy happens once per logging step; here at every call

    timings: dict[str, float] = {}
    for name, fn in (("hf", hf), ("grouped", grouped)) * 2:  # second round counts
        fn()
        started = time.perf_counter()
        for _ in range(calls):
            fn()
        timings[name] = (time.perf_counter() - started) / calls
    timings["groups"] = float(len(groups.as_logs()))
    return timings


def norms_lines(timings: dict[str, float]) -> list[str]:
    return [
        "6. gradient norms per optimizer step (real MiniLM gradients, 2 threads):",
        f"   HF clip_grad_norm_ (global norm + clip)          {timings['hf'] * 1e3:7.2f} ms",
        f"   tunefleet {timings['groups']:.0f} group norms + clip + host copy    "
        f"{timings['grouped'] * 1e3:7.2f} ms  = {timings['grouped'] / timings['hf']:.2f}x",
    ]


# --- 5. a tracker that hangs -------------------------------------------------------------------


class StepClock:
    """When each optimizer step ends, and when evaluations end: a step interval that spans an
    evaluation measures the evaluation, so it is left out."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.evaluations: list[float] = []

    def callback(self) -> object:
        from transformers import TrainerCallback

        clock = self

        class _Clock(TrainerCallback):
            def on_step_end(self, *args: object, **kwargs: object) -> None:
                clock.ends.append(time.perf_counter())

            def on_evaluate(self, *args: object, **kwargs: object) -> None:
                clock.evaluations.append(time.perf_counter())

        return _Clock()

    def steps(self) -> list[float]:
        return [
            b - a
            for a, b in zip(self.ends, self.ends[1:], strict=False)
            if not any(a < e < b for e in self.evaluations)
        ]


@contextmanager
def hung_server() -> Iterator[str]:
    """A port that accepts connections and never answers: a tracking server that hangs (a full
    disk, ``kill -STOP``), the worst case for a client that waits on it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


@dataclass
class Outage:
    steps: dict[str, list[float]]
    seconds: dict[str, float]
    undelivered: dict[str, dict[str, int]]
    wait_s: float


def mlflow_only_trial(
    config: SweepConfig, work: Path, *, uri: str, experiment_id: str
) -> tuple[float, list[float], dict[str, int]]:
    from tunefleet.platform.layout import Layout
    from tunefleet.platform.run_tracking import start_trial_tracking
    from tunefleet.trainers.run import run_trial

    cfg = config.model_copy(
        update={
            "tracking": config.tracking.model_copy(
                update={
                    "mlflow": config.tracking.mlflow.model_copy(update={"tracking_uri": uri}),
                    "wandb": config.tracking.wandb.model_copy(update={"enabled": False}),
                    "sink_wait_s": OUTAGE_WAIT_S,
                }
            )
        }
    )
    clock = StepClock()
    started = time.perf_counter()
    tracking = start_trial_tracking(
        cfg,
        Layout.at(work / "runs").ensure(),
        trial=0,
        experiment_id=experiment_id,
        parent_run_id=None,
        worker=0,
        db_url=None,
        store=None,
    )
    run_trial(cfg, bench_request(cfg, work, [tracking.callback, clock.callback()]))
    undelivered = tracking.close("FINISHED")
    return time.perf_counter() - started, clock.steps(), undelivered


def outage(config: SweepConfig, *, folder: Path) -> Outage:
    """The same trial with MLflow on sqlite and with MLflow behind a server that never answers
    (W&B off on both, to isolate MLflow): how long training steps take, and the trial."""
    from tunefleet.tracking.mlflow_sink import ensure_experiment, make_client

    folder.mkdir(parents=True, exist_ok=True)
    live_uri = f"sqlite:///{folder / 'mlflow.db'}"
    experiment = ensure_experiment(
        make_client(live_uri), "bench-outage", artifact_location=(folder / "art").as_uri()
    )
    steps: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    undelivered: dict[str, dict[str, int]] = {}
    with hung_server() as hung_uri:
        for name, uri, experiment_id in (
            ("live", live_uri, experiment),
            ("hung", hung_uri, "0"),
        ):
            work = Path(tempfile.mkdtemp(dir=folder))
            seconds[name], steps[name], undelivered[name] = mlflow_only_trial(
                config, work, uri=uri, experiment_id=experiment_id
            )
            print(f"outage: {name} {seconds[name]:.2f}s, undelivered {undelivered[name]}")
    return Outage(steps, seconds, undelivered, OUTAGE_WAIT_S)


def outage_lines(result: Outage) -> list[str]:
    live, hung = result.steps["live"], result.steps["hung"]
    lines = ["5. a tracking server that accepts connections and never answers (MLflow only):"]
    for label, key in (("MLflow on sqlite", "live"), ("MLflow server hung", "hung")):
        steps = result.steps[key]
        lines.append(
            f"   {label:20s} training steps: median {statistics.median(steps) * 1000:6.0f} ms, "
            f"p99 {percentile(steps, 99) * 1000:6.0f} ms, max {max(steps) * 1000:6.0f} ms "
            f"({len(steps)} steps); trial {result.seconds[key]:.1f} s"
        )
    lines.append(
        "   longest step with the server hung / median step with MLflow up: "
        f"{max(hung) / statistics.median(live):.2f}x (a step that waited on the tracker would "
        "take at least its 10 s timeout)"
    )
    lines.append(
        "   trial with the server hung / with MLflow up: "
        f"{result.seconds['hung'] / result.seconds['live']:.3f}x (includes the bounded wait of "
        f"{result.wait_s:.0f} s at the end); left in the spool: {result.undelivered['hung']}"
    )
    return lines


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` percent of values at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def trial_lines(trial: Trials) -> list[str]:
    bare, hf, full = (statistics.median(trial.times[s]) for s in ("bare", "hf", "full"))
    labels = {
        "bare": "bare HF Trainer, report_to=[]",
        "hf": "HF report_to=[wandb, mlflow] (sqlite, W&B offline)",
        "untracked": "tunefleet, trackers off (best checkpoint only)",
        "full": "tunefleet, full telemetry",
    }
    lines = ["1. trial wall time, median of the repeats (each run in brackets):"]
    for side, label in labels.items():
        if side not in trial.times:
            continue
        runs = ", ".join(f"{t:.2f}" for t in trial.times[side])
        lines.append(f"   {label:51s} {statistics.median(trial.times[side]):7.2f} s  ({runs})")
    lines += [
        f"   full / bare             {full / bare:.3f}x  "
        f"(goal <= {GOAL_RATIO:.2f}x: {verdict(full / bare <= GOAL_RATIO)})",
        f"   hf-integrations / bare  {hf / bare:.3f}x",
        f"   full / hf-integrations  {full / hf:.3f}x",
    ]
    if "untracked" in trial.times:
        untracked = statistics.median(trial.times["untracked"])
        lines.append(f"   full / untracked        {full / untracked:.3f}x  (telemetry alone)")
    for i, run in enumerate(trial.full):
        left = f", NOT DELIVERED {run.undelivered}" if run.undelivered else ""
        lines.append(
            f"   full run {i}: events delivered {run.tracking.bus.delivered}{left}; the end "
            f"waited {run.close_s * 1000:.0f} ms for the sinks"
        )
    seconds = [s for run in trial.full for s in run.tracking.callback.seconds]
    if seconds:
        median_us, p99 = statistics.median(seconds) * 1e6, percentile(seconds, 99) * 1e6
        lines.append(
            f"2. callback on_log on the training thread, {len(seconds)} calls in "
            f"{len(trial.full)} full run(s): median {median_us:.0f} us, p99 {p99:.0f} us, "
            f"max {max(seconds) * 1e6:.0f} us (goal p99 <= {GOAL_P99_US:.0f} us: "
            f"{verdict(p99 <= GOAL_P99_US)})"
            + (" [under 100 calls: p99 is the max]" if len(seconds) < 100 else "")
        )
    return lines


def ingest_lines(taken: Ingest) -> list[str]:
    bare, real = taken.points / taken.no_sinks_s, taken.points / taken.real_sinks_s
    left = f", NOT DELIVERED {taken.undelivered}" if taken.undelivered else ""
    return [
        f"3. spool ingest: TelemetryBus.emit on the calling thread, {taken.points:,} points "
        "(built beforehand; only the emit calls timed)",
        f"   no sinks (spool append + queue)  {bare:12,.0f} points/s  "
        f"(goal >= {GOAL_INGEST:,.0f}: {verdict(bare >= GOAL_INGEST)})",
        f"   real sinks delivering meanwhile  {real:12,.0f} points/s  "
        f"(goal: {verdict(real >= GOAL_INGEST)}); sinks: {', '.join(taken.delivered)}",
        f"   those sinks caught up {taken.drain_s:.1f} s after the last emit; "
        f"events delivered {taken.delivered}{left}",
    ]


def delivery_lines(delivered: Sequence[Delivery]) -> list[str]:
    lines = ["4. delivery from a spool: MlflowSink, log_batch of <= 1000, run creation timed"]
    for d in delivered:
        lines.append(
            f"   {d.target:21s} {d.points / d.seconds:10,.0f} points/s  ({d.points:,} points, "
            f"{d.batches} batches, {d.seconds:.2f} s; run verified: {d.verified:,} values; "
            f"spool read alone {d.points / d.read_s:,.0f} points/s)"
        )
    return lines


def summary(
    args: argparse.Namespace,
    trial: Trials | None,
    taken: Ingest | None,
    delivered: Sequence[Delivery],
    total_s: float,
    hung: Outage | None = None,
    norms: dict[str, float] | None = None,
) -> list[str]:
    lines = [
        "",
        "=" * 100,
        "tunefleet telemetry benchmark",
        f"{environment(args)}, logging every {args.logging_steps} steps, "
        f"{args.repeats} repeat(s), {args.per_emit} points per emit",
    ]
    if trial is not None:
        lines += trial_lines(trial)
    if taken is not None:
        lines += ingest_lines(taken)
    if delivered:
        lines += delivery_lines(delivered)
    if hung is not None:
        lines += outage_lines(hung)
    if norms is not None:
        lines += norms_lines(norms)
    return [*lines, f"benchmark wall time {total_s:.0f} s", "=" * 100]


def main() -> None:
    parser = trial_parser(__doc__)
    parser.add_argument("--points", type=int, default=200_000, help="points for the ingest")
    parser.add_argument("--delivery-points", type=int, default=20_000)
    parser.add_argument("--per-emit", type=int, default=20, help="points per emit (one step)")
    parser.add_argument("--logging-steps", type=int, default=5)
    parser.add_argument(
        "--with-untracked",
        action="store_true",
        help="a fourth side: run_trial with trackers off (checkpoint only), as in overhead.py",
    )
    parser.add_argument(
        "--parts",
        default=",".join(PARTS),
        help=f"comma-separated subset of {', '.join(PARTS)}",
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    if not parts <= set(PARTS):
        parser.error(f"unknown parts: {sorted(parts - set(PARTS))}")
    from tunefleet.platform.worker import quiet_libraries

    quiet_libraries()
    started = time.perf_counter()
    trial: Trials | None = None
    taken: Ingest | None = None
    delivered: list[Delivery] = []
    hung: Outage | None = None
    norms: dict[str, float] | None = None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        wandb_environment(folder)
        warm_up(args, folder / "warm-up", train="trials" in parts)
        config = config_for(args, sample_rows(args.rows, folder), logging_steps=args.logging_steps)
        if "trials" in parts:
            trial = trials(
                config, repeats=args.repeats, folder=folder, untracked=args.with_untracked
            )
        if "ingest" in parts:
            print("ingest ...", flush=True)
            taken = ingest(config, points=args.points, per_emit=args.per_emit, folder=folder)
        if "delivery" in parts:
            print("delivery ...", flush=True)
            delivered = deliveries(
                points=args.delivery_points, per_emit=args.per_emit, folder=folder / "delivery"
            )
        if "outage" in parts:
            print("outage ...", flush=True)
            hung = outage(config, folder=folder / "outage")
        if "norms" in parts:
            print("norms ...", flush=True)
            norms = gradient_norms(args.model)
    total = time.perf_counter() - started
    print("\n".join(summary(args, trial, taken, delivered, total, hung, norms)))


if __name__ == "__main__":
    main()
