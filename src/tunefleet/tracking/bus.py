"""The background delivery thread between the training loop and the sinks."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence

from tunefleet.tracking.events import Point
from tunefleet.tracking.sinks import Sink

log = logging.getLogger(__name__)


class TelemetryBus:
    """``emit`` enqueues and returns; a daemon thread batches points to every sink.

    Each sink has its own backlog, so a slow or failing sink delays only itself; a failing sink
    is retried with exponential backoff until ``close``'s deadline.
    """

    def __init__(
        self, sinks: Sequence[Sink], *, interval_s: float = 0.5, max_batch: int = 1000
    ) -> None:
        self.sinks = list(sinks)
        self.interval_s, self.max_batch = interval_s, max_batch
        self._queue: queue.SimpleQueue[Point | None] = queue.SimpleQueue()
        self._backlog: dict[str, list[Point]] = {s.name: [] for s in self.sinks}
        self._retry_at: dict[str, float] = {s.name: 0.0 for s in self.sinks}
        self._failures: dict[str, int] = {s.name: 0 for s in self.sinks}
        self.delivered: dict[str, int] = {s.name: 0 for s in self.sinks}
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tunefleet-telemetry", daemon=True)
        self._thread.start()

    def emit(self, points: Sequence[Point]) -> None:
        for point in points:
            self._queue.put(point)

    def close(self, *, status: str = "FINISHED", timeout_s: float = 60.0) -> dict[str, int]:
        """Deliver what is left (waiting at most ``timeout_s``), finish each sink; returns the
        number of points each sink did not acknowledge."""
        self._status = status
        self._deadline = time.monotonic() + timeout_s
        self._closing.set()
        self._queue.put(None)
        self._thread.join(timeout_s + 5)
        return {name: len(points) for name, points in self._backlog.items()}

    def _run(self) -> None:
        while True:
            self._drain(block=not self._closing.is_set())
            self._deliver()
            if self._closing.is_set() and (self._empty() or time.monotonic() > self._deadline):
                break
            if self._closing.is_set():
                time.sleep(0.05)
        for sink in self.sinks:
            try:
                sink.finish(status=self._status)
            except Exception:
                log.warning("sink %s failed to finish", sink.name, exc_info=True)

    def _drain(self, *, block: bool) -> None:
        try:
            item = self._queue.get(timeout=self.interval_s) if block else self._queue.get_nowait()
            while True:
                if item is not None:
                    for backlog in self._backlog.values():
                        backlog.append(item)
                item = self._queue.get_nowait()
        except queue.Empty:
            return

    def _empty(self) -> bool:
        return self._queue.empty() and not any(self._backlog.values())

    def _deliver(self) -> None:
        now = time.monotonic()
        for sink in self.sinks:
            backlog = self._backlog[sink.name]
            while backlog and self._retry_at[sink.name] <= now:
                batch = backlog[: self.max_batch]
                try:
                    sink.write(batch)
                except Exception as exc:
                    self._failures[sink.name] += 1
                    delay = min(30.0, 0.5 * 2 ** self._failures[sink.name])
                    self._retry_at[sink.name] = now + delay
                    log.warning("sink %s: %s; retrying in %.1fs", sink.name, exc, delay)
                    break
                del backlog[: len(batch)]
                self.delivered[sink.name] += len(batch)
                self._failures[sink.name] = 0
