"""``tunefleet serve`` against ``mlflow models serve`` on the same promoted model.

One trial is trained and promoted through the real CLI (MLflow sqlite registry under a temporary
--out); then each server runs alone on 127.0.0.1 (one process, one uvicorn worker each: MLflow's
default) and takes the same load from a bounded asyncio httpx client: CONCURRENCY requests in
flight, first of single texts, then of batches of 32. Each phase starts after a warm-up; the
servers alternate over the repeats and each figure is the median over them.

    python benchmarks/serving.py [--model minilm] [--requests 400] [--concurrency 32]
                                 [--batch-requests 40] [--repeats 2] [--unbatched] [--out DIR]

``--unbatched`` adds tunefleet serve with ``--max-batch 1`` (single texts only): what
micro-batching itself buys on the machine. ``--out DIR`` keeps the promoted model for reruns.

tunefleet is asked on ``/v1/predict``; MLflow on ``/invocations`` with ``dataframe_split`` (a
``text`` column), the form every MLflow version's scoring server takes.
Before timing, both servers' answers to the same texts are checked to agree.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "examples" / "data" / "yelp.csv"
NAME = "bench"
BATCH = 32


@dataclass(frozen=True)
class Side:
    """One server: how to start it, where it answers and how to ask it."""

    label: str
    command: list[str]
    env: dict[str, str]
    ready_path: str
    path: str
    body: Callable[[list[str]], dict[str, Any]]
    labels: Callable[[dict[str, Any]], list[str]]
    batches: bool = True
    """Whether it takes the batch-of-32 phase (a server run with --max-batch 1 refuses it)."""


@dataclass(frozen=True)
class Figures:
    requests_per_s: float
    texts_per_s: float
    p50_ms: float
    p99_ms: float


def texts() -> list[str]:
    with DATA.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def train_and_promote(args: argparse.Namespace, out: Path) -> None:
    rows = out.parent / "rows.csv"
    lines = DATA.read_text(encoding="utf-8").splitlines(keepends=True)
    rows.write_text("".join(lines[: args.rows + 1]), encoding="utf-8")
    config = {
        "name": NAME,
        "model": {"name_or_path": args.model},
        "data": {"train": str(rows), "test_fraction": 0.2, "max_length": 64},
        "train": {"method": "full", "epochs": 1, "batch_size": 16, "learning_rate": 5e-5},
        "search": {"trials": 1, "metric": "eval_accuracy"},
        "tracking": {"mlflow": {"enabled": True}, "wandb": {"enabled": False}},
    }
    path = out.parent / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    for command in (["sweep", str(path)], ["promote", NAME]):
        done = subprocess.run(
            [sys.executable, "-m", "tunefleet", *command, "--out", str(out)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            sys.exit(f"tunefleet {command[0]} failed:\n{done.stderr[-3000:]}")


def sides(out: Path, port: int, *, unbatched: bool) -> list[Side]:
    # mlflow models serve runs `uvicorn` from PATH: the venv's bin must be on it.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "MLFLOW_TRACKING_URI": f"sqlite:///{out / 'mlflow.db'}"}
    ours = [
        Side(
            "tunefleet serve",
            [
                *(sys.executable, "-m", "tunefleet", "serve", f"{NAME}@champion"),
                *("--out", str(out), "--port", str(port), "--max-batch", str(BATCH)),
                *("--log-level", "warning"),
            ],
            env,
            "/health/ready",
            "/v1/predict",
            lambda batch: {"inputs": batch},
            lambda answer: [p["labels"][0] for p in answer["predictions"]],
        ),
    ]
    if unbatched:  # the same server with micro-batching off: what batching itself buys
        plain = ours[0]
        ours.append(
            Side(
                "tunefleet --max-batch 1",
                [*plain.command[:-4], "--max-batch", "1", "--log-level", "warning"],
                *(plain.env, plain.ready_path, plain.path, plain.body, plain.labels),
                batches=False,
            )
        )
    return [
        *ours,
        Side(
            "mlflow models serve",
            [
                *(sys.executable, "-m", "mlflow", "models", "serve"),
                *("-m", f"models:/{NAME}@champion", "--env-manager", "local"),
                *("--host", "127.0.0.1", "--port", str(port)),
            ],
            env,
            "/ping",
            "/invocations",
            lambda batch: {"dataframe_split": {"columns": ["text"], "data": [[t] for t in batch]}},
            lambda answer: [p["label"] for p in answer["predictions"]],
        ),
    ]


@contextmanager
def running(side: Side, port: int, log: Path) -> Iterator[str]:
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as handle:
        process = subprocess.Popen(
            side.command,
            env=side.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                sys.exit(f"{side.label} exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(url + side.ready_path, timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                sys.exit(f"{side.label} not ready in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        stop(process)
        port_free(url)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (MLflow's uvicorn is a child), SIGKILL if stuck."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=30)
            break
        except subprocess.TimeoutExpired:
            continue
    # The leader's exit does not wait for MLflow's uvicorn child: whatever of the group is left
    # would answer the next server's readiness check, then vanish under its load.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def port_free(url: str, timeout_s: float = 30.0) -> None:
    """Return once nothing answers on ``url`` any more."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
        except httpx.TransportError:
            return
        time.sleep(0.2)
    sys.exit(f"{url} still answers {timeout_s:.0f} s after its server was stopped")


async def load(
    side: Side, url: str, pool: list[str], *, requests: int, size: int, concurrency: int
) -> Figures:
    """``requests`` requests of ``size`` texts, ``concurrency`` in flight; every one must be
    answered 200."""
    latencies: list[float] = []
    next_index = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as client:

        async def worker() -> None:
            nonlocal next_index
            while next_index < requests:
                i = next_index
                next_index += 1
                batch = [pool[(i * size + j) % len(pool)] for j in range(size)]
                sent = time.perf_counter()
                response = await client.post(side.path, json=side.body(batch))
                latencies.append(time.perf_counter() - sent)
                if response.status_code != 200:
                    raise RuntimeError(f"{side.label}: {response.status_code} {response.text}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return Figures(
        requests / elapsed,
        requests * size / elapsed,
        1000 * latencies[len(latencies) // 2],
        1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    )


def measure(side: Side, url: str, pool: list[str], args: argparse.Namespace) -> dict[str, Figures]:
    """Warm up, then time single texts and batches of 32."""
    asyncio.run(
        load(side, url, pool, requests=args.concurrency, size=1, concurrency=args.concurrency)
    )
    single = asyncio.run(
        load(side, url, pool, requests=args.requests, size=1, concurrency=args.concurrency)
    )
    if not side.batches:
        return {"single": single}
    batched = asyncio.run(
        load(
            side, url, pool, requests=args.batch_requests, size=BATCH, concurrency=args.concurrency
        )
    )
    return {"single": single, f"batch{BATCH}": batched}


def answer(side: Side, url: str, batch: list[str]) -> list[str]:
    response = httpx.post(url + side.path, json=side.body(batch), timeout=120)
    if response.status_code != 200:
        sys.exit(f"{side.label}: {response.status_code} {response.text[:2000]}")
    return side.labels(response.json())


def median(figures: list[Figures]) -> Figures:
    return Figures(
        *(statistics.median(getattr(f, k) for f in figures) for k in Figures.__dataclass_fields__)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--rows", type=int, default=200, help="training rows")
    parser.add_argument("--requests", type=int, default=400, help="single-text requests")
    parser.add_argument("--batch-requests", type=int, default=40, help="requests of 32 texts")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--unbatched", action="store_true", help="also time tunefleet serve with --max-batch 1"
    )
    parser.add_argument(
        "--out", type=Path, help="keep the promoted model here and reuse it when run again"
    )
    args = parser.parse_args()
    pool = texts()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out.resolve() if args.out else Path(tmp) / "runs"
        if not (out / "tunefleet.db").is_file():
            out.mkdir(parents=True, exist_ok=True)
            train_and_promote(args, out)
        port = int(os.environ.get("BENCH_PORT", "8765"))
        servers = sides(out, port, unbatched=args.unbatched)
        answers = []
        for side in servers:  # all must answer alike before anything is timed
            with running(side, port, Path(tmp) / "check.log") as url:
                answers.append(answer(side, url, pool[:1] if not side.batches else pool[:BATCH]))
        if any(a != answers[-1][: len(a)] for a in answers):
            sys.exit(f"the servers disagree on the same texts: {answers}")
        results: dict[str, dict[str, list[Figures]]] = {s.label: {} for s in servers}
        for repeat in range(args.repeats):
            order = servers if repeat % 2 == 0 else servers[::-1]
            for side in order:
                with running(side, port, Path(tmp) / f"{repeat}.log") as url:
                    for phase, figures in measure(side, url, pool, args).items():
                        results[side.label].setdefault(phase, []).append(figures)
                        print(
                            f"repeat {repeat} {side.label:24s} {phase:8s} "
                            f"{figures.requests_per_s:8.1f} req/s {figures.texts_per_s:8.1f} "
                            f"texts/s p50 {figures.p50_ms:7.1f} ms p99 {figures.p99_ms:7.1f} ms",
                            flush=True,
                        )
    report(results, args)


def report(results: dict[str, dict[str, list[Figures]]], args: argparse.Namespace) -> None:
    import torch

    theirs = results["mlflow models serve"]
    print(
        f"\nmodel {args.model}, concurrency {args.concurrency}, {args.requests} single-text and "
        f"{args.batch_requests} batch-of-{BATCH} requests, {args.repeats} repeats (medians), "
        f"{os.cpu_count()} CPUs, torch {torch.__version__}"
    )
    for phase in theirs:
        b = median(theirs[phase])
        for label, runs in results.items():
            if phase not in runs:
                continue
            a = median(runs[phase])
            print(
                f"{phase:8s} {label:24s} {a.requests_per_s:8.1f} req/s {a.texts_per_s:8.1f} "
                f"texts/s p50 {a.p50_ms:7.1f} ms p99 {a.p99_ms:7.1f} ms"
            )
            if runs is not theirs:
                speedup = a.requests_per_s / b.requests_per_s
                print(
                    f"{phase:8s} ratio {label} / mlflow: throughput {speedup:.2f}x, "
                    f"p50 {a.p50_ms / b.p50_ms:.2f}x, p99 {a.p99_ms / b.p99_ms:.2f}x"
                )


if __name__ == "__main__":
    main()
