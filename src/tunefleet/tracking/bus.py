"""The bus between the training loop and the sinks: spool first, deliver in the background."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from tunefleet.tracking.events import End, Event
from tunefleet.tracking.sinks import MAX_BATCH, Sink, deliver
from tunefleet.tracking.spool import Cursors, Item, SpoolWriter

log = logging.getLogger(__name__)

_FSYNC = "fsync"


class TelemetryBus:
    """``emit`` appends to the spool and returns; a daemon thread delivers to every sink.

    The training thread only appends buffered lines and queues them (no I/O beyond a ``write``
    into the file's buffer). Each sink has its own backlog and cursor, so a slow or unreachable
    sink delays only itself; it is retried with exponential backoff (0.5 s doubling to 30 s)
    while training goes on. ``close`` waits at most its timeout and leaves what a sink did not
    acknowledge in the spool, for ``tunefleet sync``.
    """

    def __init__(
        self,
        spool: SpoolWriter,
        sinks: Sequence[Sink],
        cursors: Cursors,
        *,
        interval_s: float = 0.5,
    ) -> None:
        self.spool, self.sinks, self.cursors = spool, list(sinks), cursors
        self.interval_s = interval_s
        self._queue: queue.SimpleQueue[list[Item] | str | None] = queue.SimpleQueue()
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
        if events:
            # Spool order and delivery order must agree (a cursor is a file offset), and the
            # system monitor emits from its own thread.
            with self._emit_lock:
                self._queue.put(self.spool.write(events))

    def flush(self) -> None:
        """Make everything emitted so far survive this process being killed (an OS-level flush,
        here); the bus thread then fsyncs it."""
        self.spool.flush()
        self._queue.put(_FSYNC)

    def close(self, *, status: str = "FINISHED", timeout_s: float = 30.0) -> dict[str, int]:
        """End the trial with ``status``, deliver what is left for at most ``timeout_s`` and
        return the number of events each sink did not acknowledge (they stay in the spool)."""
        self.emit([End(status)])
        self.flush()
        self._deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout_s + 5)
        self.spool.close()
        return {name: len(items) for name, items in self._backlog.items()}

    def state(self, sink: str) -> dict[str, object]:
        return self.cursors.state(sink)

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
                if item == _FSYNC:
                    fsync = True
                elif isinstance(item, list):
                    for backlog in self._backlog.values():
                        backlog.extend(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            pass
        if fsync:
            self.spool.fsync()

    def _done(self) -> bool:
        """Closing is done when nothing is left, or what is left cannot be sent in time."""
        if not self._queue.empty():
            return False
        now = time.monotonic()
        return now >= self._deadline or all(
            not self._backlog[name] or self._retry_at[name] >= self._deadline
            for name in self._backlog
        )

    def _deliver(self) -> None:
        for sink in self.sinks:
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

    def _back_off(self, name: str, exc: Exception) -> None:
        self._failures[name] += 1
        delay = min(30.0, 0.5 * 2 ** (self._failures[name] - 1))
        self._retry_at[name] = time.monotonic() + delay
        self.errors[name] = f"{type(exc).__name__}: {exc}"
        if self._failures[name] in (1, 5) or self._failures[name] % 20 == 0:
            log.warning("tracker %s: %s; retrying in %.1fs", name, self.errors[name], delay)
