"""The bus between the training loop and the sinks: spool first, deliver in the background."""

from __future__ import annotations

import enum
import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence

from tunefleet.tracking.events import End, Event, training_step
from tunefleet.tracking.sinks import MAX_BATCH, Sink, deliver
from tunefleet.tracking.spool import Cursors, Item, SpoolWriter, read_items

log = logging.getLogger(__name__)


class _Signal(enum.Enum):
    """What the bus thread's queue carries besides appended items."""

    FSYNC = enum.auto()
    """Lines were flushed to the OS: fsync them."""
    WAKE = enum.auto()
    """Closing: stop waiting for items."""


MAX_BACKLOG = 100_000
"""Events a sink may have waiting in memory; beyond, it reads them from the spool file."""


def _whole_lines(items: Iterator[Item]) -> list[Item]:
    """At least MAX_BATCH events (or all there are), ending at the end of a line."""
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= MAX_BATCH and item.last:
            break
    return batch


class TelemetryBus:
    """``emit`` appends to the spool and returns; a daemon thread delivers to every sink.

    The training thread only appends buffered lines and queues them (no I/O beyond a ``write``
    into the file's buffer). Each sink has its own backlog and cursor, so a slow or unreachable
    sink delays only itself; it is retried with exponential backoff (0.5 s doubling to 30 s)
    while training goes on. ``close`` waits at most its timeout and leaves what a sink did not
    acknowledge in the spool, for ``tunefleet sync``.

    A sink's backlog is held in memory up to ``max_backlog`` events; a sink that falls further
    behind (a tracker down for hours) drops it and reads from the spool file from its cursor
    instead, until it has caught up: memory stays bounded however long the outage.

    A retry that continues a dead attempt's runs passes ``logged_through``, the last training
    step the dead attempts logged: it redoes the steps after its resumable state, and their
    events are dropped here, so each step reaches the trackers once. A batch is handed to a sink
    only once its lines are in the spool file (flushed to the OS), so a killed attempt's spool
    holds everything its trackers got, and ``logged_through`` read from it is never short.
    """

    def __init__(
        self,
        spool: SpoolWriter,
        sinks: Sequence[Sink],
        cursors: Cursors,
        *,
        interval_s: float = 0.5,
        max_backlog: int = MAX_BACKLOG,
        logged_through: int | None = None,
    ) -> None:
        self.spool, self.sinks, self.cursors = spool, list(sinks), cursors
        self.logged_through = logged_through
        self.interval_s, self.max_backlog = interval_s, max_backlog
        self._behind: set[str] = set()
        """Sinks reading from the spool file rather than from memory."""
        self.fell_behind: dict[str, int] = {s.name: 0 for s in sinks}
        """How often each sink switched to reading the spool file."""
        self._skip_until: dict[str, int] = {s.name: 0 for s in sinks}
        """Queued items ending at or before this offset were read from the file already."""
        self._queue: queue.SimpleQueue[list[Item] | _Signal] = queue.SimpleQueue()
        self._backlog: dict[str, list[Item]] = {s.name: [] for s in self.sinks}
        self._retry_at: dict[str, float] = {s.name: 0.0 for s in self.sinks}
        self._failures: dict[str, int] = {s.name: 0 for s in self.sinks}
        self.delivered: dict[str, int] = {s.name: 0 for s in self.sinks}
        self.errors: dict[str, str] = {}
        self._closing = threading.Event()
        self._emit_lock = threading.Lock()
        self._deadline = float("inf")
        self._thread = threading.Thread(target=self._run, name="tunefleet-telemetry", daemon=True)
        self._thread.start()

    def emit(self, events: Sequence[Event]) -> None:
        if self.logged_through is not None:
            events = [e for e in events if not self._logged_already(e)]
        if events:
            # Spool order and delivery order must agree (a cursor is a file offset), and the
            # system monitor emits from its own thread.
            with self._emit_lock:
                self._queue.put(self.spool.write(events))

    def _logged_already(self, event: Event) -> bool:
        step = training_step(event)
        return step is not None and self.logged_through is not None and step <= self.logged_through

    def flush(self) -> None:
        """Make everything emitted so far survive this process being killed (an OS-level flush,
        here); the bus thread then fsyncs it."""
        self.spool.flush()
        self._queue.put(_Signal.FSYNC)

    def close(self, *, status: str = "FINISHED", timeout_s: float = 30.0) -> dict[str, int]:
        """End the trial with ``status``, deliver what is left for at most ``timeout_s`` and
        return the number of events each sink did not acknowledge (they stay in the spool)."""
        self.emit([End(status)])
        self.flush()
        self._deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._queue.put(_Signal.WAKE)
        self._thread.join(timeout_s + 5)
        self.spool.close()
        return {sink.name: self._unsent(sink.name) for sink in self.sinks}

    def _unsent(self, name: str) -> int:
        if name not in self._behind:
            return len(self._backlog[name])
        return sum(1 for _ in read_items(self.spool.path, self.cursors.offset(name)))

    def _run(self) -> None:
        try:
            while True:
                self._drain(block=not self._closing.is_set())
                self._deliver()
                if self._closing.is_set() and self._done():
                    break
                if self._closing.is_set():
                    time.sleep(0.05)
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except Exception:
                    log.warning("sink %s failed to close", sink.name, exc_info=True)

    def _drain(self, *, block: bool) -> None:
        fsync = False
        try:
            item = self._queue.get(timeout=self.interval_s) if block else self._queue.get_nowait()
            while True:
                if item is _Signal.FSYNC:
                    fsync = True
                elif isinstance(item, list):
                    self._enqueue(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if fsync:
            self.spool.fsync()

    def _enqueue(self, items: list[Item]) -> None:
        for name, backlog in self._backlog.items():
            if name in self._behind:
                continue  # it reads these from the file
            backlog.extend(i for i in items if i.end > self._skip_until[name])
            if len(backlog) > self.max_backlog:
                backlog.clear()
                self._behind.add(name)
                self.fell_behind[name] += 1

    def _done(self) -> bool:
        """Closing is done when nothing is left, or what is left cannot be sent in time."""
        if not self._queue.empty():
            return False
        now = time.monotonic()
        return now >= self._deadline or all(
            (not self._backlog[name] and name not in self._behind)
            or self._retry_at[name] >= self._deadline
            for name in self._backlog
        )

    def _deliver(self) -> None:
        if any(self._backlog.values()):
            self.spool.flush()  # nothing reaches a tracker before it is in the file
        for sink in self.sinks:
            if sink.name in self._behind:
                self._catch_up(sink)
                continue
            backlog = self._backlog[sink.name]
            while backlog and self._retry_at[sink.name] <= time.monotonic():
                batch = backlog[:MAX_BATCH]
                try:
                    sent = deliver(sink, batch, self.cursors)
                except Exception as exc:
                    self._back_off(sink.name, exc)
                    break
                del backlog[:sent]
                self.delivered[sink.name] += sent
                self._failures[sink.name] = 0

    def _catch_up(self, sink: Sink) -> None:
        """Deliver from the spool file, whole lines at a time (a cursor moves only past whole
        lines); once the file holds nothing more for the sink, go back to memory."""
        name = sink.name
        while name in self._behind and self._retry_at[name] <= time.monotonic():
            self.spool.flush()
            batch = _whole_lines(read_items(self.spool.path, self.cursors.offset(name)))
            if not batch:
                with self._emit_lock:  # no emit between this check and the switch
                    if self._caught_up(name):
                        self._behind.discard(name)
                        self._skip_until[name] = self.spool.size
                continue
            try:
                self.delivered[name] += deliver(sink, batch, self.cursors)
            except Exception as exc:
                self._back_off(name, exc)
                return
            self._failures[name] = 0

    def _caught_up(self, name: str) -> bool:
        self.spool.flush()
        return not any(True for _ in read_items(self.spool.path, self.cursors.offset(name)))

    def _back_off(self, name: str, exc: Exception) -> None:
        self._failures[name] += 1
        delay = min(30.0, 0.5 * 2 ** (self._failures[name] - 1))
        self._retry_at[name] = time.monotonic() + delay
        self.errors[name] = f"{type(exc).__name__}: {exc}"
        if self._failures[name] in (1, 5) or self._failures[name] % 20 == 0:
            log.warning("tracker %s: %s; retrying in %.1fs", name, self.errors[name], delay)
