"""The sink protocol every tracker backend implements, and batched delivery to one sink."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tunefleet.tracking.events import Event
from tunefleet.tracking.spool import Cursors, Item

MAX_BATCH = 1000
"""Events per ``write``: MLflow's ``log_batch`` takes at most 1,000 metrics a request."""


class Sink(Protocol):
    """A destination for a trial's events.

    Contract: ``write`` delivers a batch in order or raises; a batch it raised on is written
    again later, whole (after a crash, the batch in flight is written again too), so writing
    the same events twice must leave the tracker as if once — MLflow's store ignores a metric it
    already holds with the same key, step, timestamp and value. ``state`` is what the sink needs
    to continue in another process (the run ids it created); it is saved with the cursor.
    ``close`` releases resources; the run's status comes as an ``End`` event. Never called from
    the training thread.
    """

    name: str

    def write(self, events: Sequence[Event]) -> None: ...

    def state(self) -> Mapping[str, Any]: ...

    def close(self) -> None: ...


def batches(items: Sequence[Item], limit: int = MAX_BATCH) -> list[Sequence[Item]]:
    return [items[i : i + limit] for i in range(0, len(items), limit)]


def deliver(sink: Sink, items: Sequence[Item], cursors: Cursors) -> int:
    """Write one batch and move the sink's cursor past every line it completed; returns the
    number of events written. Raises what the sink raised (the cursor stays)."""
    sink.write([item.event for item in items])
    done = [item.end for item in items if item.last]
    if done:
        cursors.advance(sink.name, offset=max(done), state=sink.state())
    return len(items)
