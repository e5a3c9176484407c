"""What flows from training to the sinks: a trial's events, in the order they happened.

Every event is appended to the trial's spool before any sink sees it, so each one has a place in
that file; a sink's cursor is a byte offset into it. Events are plain frozen data with a JSON
form (``encode_event``/``decode_event``) so that a later process can replay them.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TERMINAL_STATES = ("FINISHED", "FAILED", "KILLED")
"""MLflow's run statuses for a run that ended (a pruned trial ends KILLED)."""
CONTINUED = "CONTINUED"
"""A dead attempt's spool, handed over to the retry that continues its runs: the trackers' runs
stay open (the retry ends them)."""
END_STATES = (*TERMINAL_STATES, CONTINUED)


@dataclass(frozen=True)
class Point:
    """One metric value at one training step."""

    key: str
    value: float
    step: int
    timestamp_ms: int

    @classmethod
    def now(cls, key: str, value: float, step: int) -> Point:
        return cls(key, float(value), int(step), int(time.time() * 1000))


@dataclass(frozen=True)
class Evaluation:
    """The report (confusion matrix, per-class scores) of an evaluation that became the best."""

    step: int
    report: Mapping[str, Any]


@dataclass(frozen=True)
class Checkpoint:
    """A new best checkpoint was written."""

    step: int
    value: float
    path: str


@dataclass(frozen=True)
class BestSoFar:
    """This trial became the sweep's best: its value and params go to the sweep's parent run.

    ``step`` is the number of complete trials then: a later best always has a step at least as
    high (trial numbers are not: with several workers, trial 5 can end before trial 4)."""

    trial: int
    value: float
    params: Mapping[str, Any]
    step: int
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass(frozen=True)
class Progress:
    """Training (re)started at ``step`` of ``total`` optimizer steps: with the points' steps and
    times that follow, how far a running trial is and when it will end."""

    step: int
    total: int
    timestamp_ms: int = field(default_factory=lambda: int(time.time() * 1000))


@dataclass(frozen=True)
class End:
    """The attempt ended; ``status`` is one of :data:`END_STATES`."""

    status: str

    def __post_init__(self) -> None:
        if self.status not in END_STATES:
            raise ValueError(f"status must be one of {END_STATES}, got {self.status!r}")


Event = Point | Evaluation | Checkpoint | BestSoFar | Progress | End


def training_step(event: Event) -> int | None:
    """The training step an event belongs to; None for a sweep-level or closing event."""
    if isinstance(event, Point | Evaluation | Checkpoint):
        return event.step
    return None


@dataclass(frozen=True)
class RunInfo:
    """Who a trial's events belong to; the spool's header keeps it for replay."""

    sweep: str
    trial: int
    method: str
    params: dict[str, object]
    """The trial's concrete config, flattened to dotted keys, secrets redacted."""
    tags: dict[str, str] = field(default_factory=dict)
    """Worker, host and pid: where the trial ran."""
    run_name: str = ""
    """The run's display name in the trackers; ``trial-N`` when empty."""
    attempt: int = 1
    """2, 3, ...: a retry, continuing the runs its dead attempts started."""

    @property
    def name(self) -> str:
        return self.run_name or f"trial-{self.trial}"


def encode_points(points: list[Point]) -> dict[str, Any]:
    # One compact row per point keeps the spool cheap to write at every logging step.
    return {"p": [[p.key, p.value, p.step, p.timestamp_ms] for p in points]}


def encode_event(event: Event) -> dict[str, Any]:
    if isinstance(event, Point):
        return encode_points([event])
    if isinstance(event, Evaluation):
        return {"e": "evaluation", "step": event.step, "report": dict(event.report)}
    if isinstance(event, Checkpoint):
        return {"e": "checkpoint", "step": event.step, "value": event.value, "path": event.path}
    if isinstance(event, Progress):
        return {"e": "progress", "step": event.step, "total": event.total, "t": event.timestamp_ms}
    if isinstance(event, BestSoFar):
        return {
            "e": "best",
            "trial": event.trial,
            "value": event.value,
            "params": dict(event.params),
            "step": event.step,
            "t": event.timestamp_ms,
        }
    return {"e": "end", "status": event.status}


def decode_line(record: Mapping[str, Any]) -> list[Event]:
    """The events one spool line holds (a line of points holds many)."""
    if "p" in record:
        return [Point(str(k), float(v), int(s), int(t)) for k, v, s, t in record["p"]]
    kind = record["e"]
    if kind == "evaluation":
        return [Evaluation(int(record["step"]), record["report"])]
    if kind == "checkpoint":
        return [Checkpoint(int(record["step"]), float(record["value"]), str(record["path"]))]
    if kind == "best":
        return [
            BestSoFar(
                int(record["trial"]),
                float(record["value"]),
                record["params"],
                int(record["step"]),
                int(record["t"]),
            )
        ]
    if kind == "progress":
        return [Progress(int(record["step"]), int(record["total"]), int(record["t"]))]
    if kind == "end":
        return [End(str(record["status"]))]
    raise ValueError(f"unknown spool event {kind!r}")
