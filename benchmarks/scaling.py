"""How a sweep scales with workers, and what ``--engine ray`` costs against ``--engine local``.

Real data and model: the packaged MiniLM-L6 (full fine-tuning) on the first ``--rows`` Yelp
sentences of the demo, short trials (``--epochs``), trackers off (this measures placement and the
worker loop, not telemetry: benchmarks/telemetry.py does that).

1. ``workers``: trials per hour with 2 workers against 1, each worker at ``--threads`` torch
   threads, so a trial gets the same compute on both sides. The sweep is prepared once per side
   (study, store, budget), then ``tunefleet worker`` processes run it; timed from starting the
   workers to the last one exiting (worker start-up included: a real sweep pays it too).
2. ``engines``: the same sweep through ``tunefleet sweep --workers 2`` with ``--engine local``,
   with ``--engine ray --cpus-per-trial 1`` (a Ray cluster started on this machine by the
   launcher, as a user without a cluster gets it), and the same on a one-node cluster started
   beforehand (``ray start --head``, passed as ``--address``: a user's running cluster); wall
   time of the whole command each.
3. ``kill``: one trial of ``--kill-epochs`` epochs (an evaluation, so a resumable state, per
   epoch; a point per step), its worker sent SIGKILL ``--kill-after`` steps after its first
   resumable state. Reported: the steps its retry redid (the dead attempt's last logged step
   minus the step it resumed from) and the seconds from the kill to the retry's first new step
   (the launcher noticing, a new worker starting, the model and the state loading). The retry's
   final value is checked against the same trial run uninterrupted.

    python benchmarks/scaling.py [--rows 200] [--epochs 1] [--trials 6] [--threads 1]
        [--parts workers,engines,kill] [--kill-epochs 3] [--kill-after 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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
    "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
}


def sweep_config(
    args: argparse.Namespace,
    folder: Path,
    name: str,
    *,
    trials: int | None = None,
    epochs: int | None = None,
) -> Path:
    rows = DATA.read_text(encoding="utf-8").splitlines(keepends=True)
    data = folder / "rows.csv"
    data.write_text("".join(rows[: args.rows + 1]), encoding="utf-8")
    config: dict[str, Any] = {
        "name": name,
        "model": {"name_or_path": "minilm"},
        "data": {"train": str(data), "eval_fraction": 0.2, "max_length": 32},
        "train": {
            "method": "full",
            "epochs": epochs or args.epochs,
            "batch_size": 16,
            "logging_steps": 1,
        },
        "search": {
            "trials": trials or args.trials,
            "sampler": "random",
            "pruner": "none",
            "space": {"train.learning_rate": {"low": 2e-5, "high": 1e-4, "log": True}},
        },
        "tracking": {"mlflow": {"enabled": False}, "wandb": {"enabled": False}},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def prepared(config_file: Path, out: Path) -> str:
    """The sweep's study, store record and budget, as ``tunefleet sweep`` makes them."""
    from tunefleet.config import load_config
    from tunefleet.platform.launcher import prepare_sweep
    from tunefleet.platform.layout import Layout

    layout = Layout.at(out)
    prepare_sweep(load_config(config_file), layout, layout.db_url).dispose()
    return layout.db_url


@dataclass(frozen=True)
class Side:
    wall: float
    done: int
    trial_s: float
    """Median seconds of one trial (its training path, as the store records it)."""
    load: str


def workers_side(args: argparse.Namespace, folder: Path, workers: int) -> Side:
    """Seconds from starting ``workers`` workers to the last one exiting; trials complete."""
    import optuna

    from tunefleet.platform.store import Store

    name = f"w{workers}"
    config_file = sweep_config(args, folder, name)
    out = folder / f"out-{name}"
    db = prepared(config_file, out)
    threads = str(args.threads)
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [
                *TUNEFLEET,
                "worker",
                name,
                "--out",
                str(out),
                "--index",
                f"{i}",
                "--threads",
                threads,
            ],
            env={**ENV, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": threads},
            stdout=subprocess.DEVNULL,
        )
        for i in range(workers)
    ]
    codes = [p.wait() for p in procs]
    wall = time.perf_counter() - started
    assert codes == [0] * workers, codes
    study = optuna.load_study(study_name=name, storage=db)
    done = sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    store = Store(db)
    seconds = [r.seconds for r in store.trials(name) if r.seconds is not None]
    store.dispose()
    return Side(wall, done, statistics.median(seconds), load())


def engine_side(
    args: argparse.Namespace, folder: Path, engine: str, address: str | None = None
) -> float:
    name = f"e{engine}{'-cluster' if address else ''}"
    config_file = sweep_config(args, folder, name)
    command = [*TUNEFLEET, "sweep", str(config_file), "--out", str(folder / f"out-{name}")]
    command += ["--workers", "2", "--engine", engine]
    if engine == "ray":
        command += ["--cpus-per-trial", "1"]
    if address:
        command += ["--address", address]
    started = time.perf_counter()
    result = subprocess.run(command, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - started
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return wall


@dataclass(frozen=True)
class Kill:
    redone: int
    """Steps the retry trained again: the dead attempt's last logged step - the resumed step."""
    to_first_step: float
    """Seconds from the SIGKILL to the retry's first new step."""
    resumed_from: int
    total: int
    retry_value: float
    uninterrupted_value: float


def kill_side(args: argparse.Namespace, folder: Path) -> Kill:
    """A 1-trial sweep whose worker is killed mid-trial, against the same sweep uninterrupted."""
    import optuna

    from tunefleet.platform.layout import Layout
    from tunefleet.trainers.resume import resumable_step

    values = {}
    for name in ("plain", "killed"):
        config = sweep_config(args, folder, name, trials=1, epochs=args.kill_epochs)
        out = folder / f"out-{name}"
        command = [*TUNEFLEET, "sweep", str(config), "--out", str(out), "--workers", "1"]
        proc = subprocess.Popen(command, env=ENV, stdout=subprocess.PIPE, text=True)
        if name == "killed":
            killed_at = _kill_mid_trial(out, name, args.kill_after, resumable_step)
        output, _ = proc.communicate()
        assert proc.returncode == 0, output[-3000:]
        study = optuna.load_study(study_name=name, storage=Layout.at(out).db_url)
        values[name] = study.best_value
    retry = study.trials[1].user_attrs
    first = _first_new_step(Layout.at(out).spool_dir(name) / retry["tracking"]["spool"])
    return Kill(
        redone=retry["tracking"]["logged_through"] - retry["resumed_from_step"],
        to_first_step=first - killed_at,
        resumed_from=retry["resumed_from_step"],
        total=_total_steps(Layout.at(out).spool_dir(name) / retry["tracking"]["spool"]),
        retry_value=values["killed"],
        uninterrupted_value=values["plain"],
    )


def _kill_mid_trial(out: Path, name: str, after: int, resumable_step: Any) -> float:
    """SIGKILL trial 0's worker ``after`` steps past its first resumable state; the time."""
    from tunefleet.platform.layout import Layout
    from tunefleet.platform.store import Store

    layout = Layout.at(out)
    resume = layout.resume_dir(name, 0)
    while resumable_step(resume) is None:
        time.sleep(0.05)
    saved = resumable_step(resume)
    store = Store(layout.db_url)
    try:
        while True:
            record = store.trial(name, 0)
            if record and record.live and int(record.live["step"]) >= saved + after:
                os.kill(int(record.pid or 0), 9)
                return time.time()
            time.sleep(0.05)
    finally:
        store.dispose()


def _first_new_step(spool: Path) -> float:
    """When the retry logged its first step (its spool holds only steps it had not logged)."""
    from tunefleet.tracking.events import Point
    from tunefleet.tracking.spool import read_items

    stamps = [i.event.timestamp_ms for i in read_items(spool) if isinstance(i.event, Point)]
    return min(stamps) / 1000


def _total_steps(spool: Path) -> int:
    from tunefleet.tracking.events import Progress
    from tunefleet.tracking.spool import read_items

    return next(i.event.total for i in read_items(spool) if isinstance(i.event, Progress))


@contextmanager
def ray_cluster(folder: Path) -> Iterator[str]:
    """A one-node Ray cluster started before the timing, as a user's cluster would be."""
    port = str(free_port())
    ray = [str(Path(sys.executable).with_name("ray"))]
    started = subprocess.run(
        [*ray, "start", "--head", "--port", port, "--num-cpus", "2", "--include-dashboard=false"],
        env={**ENV, "RAY_TMPDIR": str(folder / "ray")},
        capture_output=True,
        text=True,
    )
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([*ray, "stop", "--force"], env=ENV, capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def load() -> str:
    """The machine's load averages: on a shared machine the other work is part of the figure."""
    one, five, _ = os.getloadavg()
    return f"(load average 1 min {one:.1f}, 5 min {five:.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--parts", default="workers,engines,kill")
    parser.add_argument("--kill-epochs", type=int, default=3)
    parser.add_argument("--kill-after", type=int, default=3)
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    print(
        f"minilm, {args.rows} rows, {args.epochs} epoch(s), {args.trials} trials per sweep, "
        f"{os.cpu_count()} cores"
    )
    begun = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tf-scaling-") as tmp:
        folder = Path(tmp)
        if "workers" in parts:
            one = workers_side(args, folder, 1)
            two = workers_side(args, folder, 2)
            for count, side in ((1, one), (2, two)):
                print(
                    f"{count} worker(s) x {args.threads} thread(s): {side.done} trials in "
                    f"{side.wall:.1f} s, median trial {side.trial_s:.1f} s {side.load}"
                )
            rate1, rate2 = one.done / one.wall * 3600, two.done / two.wall * 3600
            print(f"trials/hour: {rate1:.0f} -> {rate2:.0f}, ratio {rate2 / rate1:.2f}x")
        if "engines" in parts:
            local = engine_side(args, folder, "local")
            ray = engine_side(args, folder, "ray")
            with ray_cluster(folder) as address:
                on_cluster = engine_side(args, folder, "ray", address)
            print(
                f"sweep --workers 2: local {local:.1f} s, ray starting its own cluster "
                f"{ray:.1f} s, ray on a running cluster {on_cluster:.1f} s {load()}"
            )
            print(
                f"ray / local wall time: {ray / local:.2f}x (cluster started by the launcher), "
                f"{on_cluster / local:.2f}x (on a running cluster)"
            )
        if "kill" in parts:
            kill = kill_side(args, folder)
            print(
                f"kill -9 mid-trial: resumed from step {kill.resumed_from} of {kill.total}, "
                f"{kill.redone} step(s) redone, {kill.to_first_step:.1f} s from the kill to the "
                f"retry's first new step {load()}"
            )
            same = "same" if kill.retry_value == kill.uninterrupted_value else "DIFFERENT"
            values = f"{kill.retry_value:.4f}, uninterrupted {kill.uninterrupted_value:.4f}"
            print(f"retry's value {values} ({same})")
    print(f"benchmark took {time.perf_counter() - begun:.0f} s")


if __name__ == "__main__":
    main()
