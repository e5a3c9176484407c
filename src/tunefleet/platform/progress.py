"""How far a sweep is: each running trial's step of its total and its ETA, and the sweep's ETA,
from what the store sink keeps live on each running trial's row (``platform.store_sink``).

A trial's ETA is its remaining steps at the pace this attempt has kept since it (re)started
(a resumed attempt's pace does not count the steps it skipped), counted down from when its
latest point was logged. The sweep's ETA assumes each trial still to start takes the median
duration of the trials finished so far (before any has finished: of the running ones, elapsed
plus ETA), spread over the workers: at least the longest running trial's ETA.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from optuna.trial import FrozenTrial, TrialState

if TYPE_CHECKING:
    from tunefleet.platform.store import TrialRecord


@dataclass(frozen=True)
class Running:
    """A running trial as the progress line and ``status`` show it."""

    number: int
    attempt: int
    worker: str
    host: str
    step: int
    total: int | None
    eta_s: float | None
    elapsed_s: float

    def json(self) -> dict[str, Any]:
        """What ``status --json`` shows of it."""
        keys = ("worker", "host", "step", "total", "eta_s")
        return {key: getattr(self, key) for key in keys}

    def cell(self) -> str:
        """``trial 3 · w1@node-a · 40/120 · ETA 1m20s`` (attempt shown from the second)."""
        parts = [f"trial {self.number}"]
        if self.attempt > 1:
            parts[0] += f" (attempt {self.attempt})"
        if self.total is None:
            return f"{parts[0]} · starting"  # no step yet: loading the model and data
        parts.append(f"w{self.worker}@{self.host}")
        parts.append(f"{self.step}/{self.total}")
        if self.eta_s is not None:
            parts.append(f"ETA {duration(self.eta_s)}")
        return " · ".join(parts)


@dataclass(frozen=True)
class SweepProgress:
    runs: list[Running]
    eta_s: float | None

    def line(self, *, inline: int = 3) -> str:
        """`` · ETA 4m10s | trial 3 · w1@node-a · 40/120 · ETA 1m20s | ...`` (the first
        ``inline`` running trials, then a count)."""
        text = f" · ETA {duration(self.eta_s)}" if self.eta_s is not None else ""
        cells = [r.cell() for r in self.runs[:inline]]
        if len(self.runs) > inline:
            cells.append(f"+{len(self.runs) - inline} more")
        return text + "".join(f" | {c}" for c in cells)


def sweep_progress(
    trials: Sequence[FrozenTrial],
    records: Mapping[int, TrialRecord],
    *,
    budget: int,
    workers: int,
    now: int | None = None,
) -> SweepProgress:
    """The running trials (by number) and the sweep's ETA; ``now`` in ms since the epoch."""
    now = now_ms() if now is None else now
    runs = []
    for trial in trials:
        if trial.state != TrialState.RUNNING:
            continue
        record = records.get(trial.number)
        started = trial.datetime_start.timestamp() * 1000 if trial.datetime_start else now
        attempt = record.attempt if record else 1
        live = record.live if record else None
        runs.append(running(trial.number, attempt, live, (now - started) / 1000, now))
    finished = [
        r.seconds
        for r in records.values()
        if r.state in ("COMPLETE", "PRUNED") and r.seconds is not None
    ]
    done = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    lost = sum(r.state == "FAIL" and not r.requeued for r in records.values())
    pending = budget - done - len(runs) - lost
    eta = sweep_eta(runs, finished_s=finished, pending=pending, workers=workers)
    return SweepProgress(runs, eta)


def running(
    number: int, attempt: int, live: Mapping[str, Any] | None, elapsed_s: float, now_ms: int
) -> Running:
    live = live or {}
    return Running(
        number=number,
        attempt=attempt,
        worker=str(live.get("worker", "?")),
        host=str(live.get("host", "?")),
        step=int(live.get("step", 0)),
        total=int(live["total"]) if live.get("total") else None,
        eta_s=trial_eta(live, now_ms),
        elapsed_s=elapsed_s,
    )


def trial_eta(live: Mapping[str, Any], now_ms: int) -> float | None:
    """Seconds left, or None before this attempt has logged a step past its start."""
    try:
        total, step = int(live["total"]), int(live["step"])
        since_step, since_ms, at_ms = int(live["since_step"]), int(live["since_ms"]), live["at_ms"]
    except (KeyError, TypeError, ValueError):
        return None
    done = step - since_step
    if done <= 0 or total <= 0:
        return None
    per_step_ms = (int(at_ms) - since_ms) / done
    left_ms = (total - step) * per_step_ms - (now_ms - int(at_ms))
    return max(0.0, left_ms / 1000)


def sweep_eta(
    runs: Sequence[Running], *, finished_s: Sequence[float], pending: int, workers: int
) -> float | None:
    """Seconds until the budget is spent, or None when there is nothing to go on yet."""
    etas = [r.eta_s for r in runs if r.eta_s is not None]
    if len(etas) < len(runs) or (not runs and pending <= 0):
        return None
    if finished_s:
        each = statistics.median(finished_s)
    elif runs:
        each = statistics.median([r.elapsed_s + (r.eta_s or 0.0) for r in runs])
    else:
        return None
    spread = (sum(etas) + max(0, pending) * each) / max(1, workers)
    return max([spread, *etas])


def duration(seconds: float) -> str:
    """``45s``, ``3m05s``, ``2h04m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def now_ms() -> int:
    return int(time.time() * 1000)
