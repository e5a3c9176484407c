"""What flows from training to the sinks."""

from __future__ import annotations

import time
from dataclasses import dataclass


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
class RunInfo:
    """Who a trial's points belong to; handed to each sink when the trial starts."""

    sweep: str
    trial: int
    method: str
    params: dict[str, object]
    """The trial's concrete config, flattened to dotted keys."""
