"""Progress lines on stdout for ``tunefleet train`` (a single run has no sweep progress line)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import groupby
from typing import Any, TextIO

from tunefleet.tracking.events import Checkpoint, End, Event, Point

SHOWN = ("loss", "learning_rate", "grad_norm", "epoch")


class ConsoleSink:
    """Prints the training keys and every eval metric, one line per step; nothing to replay, so
    no spool header names it (``tunefleet train`` adds it to its own bus)."""

    name = "console"
    run_id: str | None = None

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, events: Sequence[Event]) -> None:
        points = [e for e in events if isinstance(e, Point)]
        for step, group in groupby(points, key=lambda p: p.step):
            shown = [p for p in group if p.key in SHOWN or p.key.startswith("eval_")]
            if shown:
                values = "  ".join(f"{p.key} {p.value:.4g}" for p in shown)
                print(f"step {step:>6}  {values}", file=self.stream, flush=True)
        for event in events:
            if isinstance(event, Checkpoint):
                print(f"best so far {event.value:.4f}: {event.path}", file=self.stream, flush=True)
            elif isinstance(event, End):
                print(f"run {event.status.lower()}", file=self.stream, flush=True)

    def state(self) -> Mapping[str, Any]:
        return {}

    def close(self) -> None:
        """The stream is the caller's."""
