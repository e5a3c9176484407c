"""System metrics sampled on a background thread while a trial trains: machine and process CPU,
the process's resident memory and, where there is a GPU, its memory and utilisation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psutil

from tunefleet.tracking.events import Point

logger = logging.getLogger(__name__)

MB = 2**20


class SystemMonitor:
    """Every ``every_s`` seconds hands ``emit`` one sample as ``system/...`` points, at the
    training step ``step()`` says; ``every_s == 0`` samples nothing and starts no thread.

    A sample that fails is logged (the first time only) and skipped: system metrics are never a
    reason for a trial to fail or to flood its log.
    """

    def __init__(
        self,
        every_s: float,
        emit: Callable[[list[Point]], None],
        step: Callable[[], int],
    ) -> None:
        if every_s < 0:
            raise ValueError(f"every_s must be >= 0, not {every_s}")
        self.every_s, self.emit, self.step = every_s, emit, step
        self._process = psutil.Process()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False
        self._gpus: _Gpus | None = None

    def start(self) -> None:
        if self.every_s == 0 or self._thread is not None:
            return
        # psutil's CPU percentages are since the previous call: this one sets the baseline.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)
        self._gpus = _Gpus.probe()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tunefleet-system", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop sampling; returns as soon as the thread has (an in-flight sample finishes)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        thread.join(timeout_s)

    def __enter__(self) -> SystemMonitor:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def sample(self) -> list[Point]:
        """One reading of every metric, at the current step."""
        step = self.step()
        values = {
            "system/cpu_percent": psutil.cpu_percent(interval=None),
            "system/process_cpu_percent": self._process.cpu_percent(interval=None),
            "system/rss_mb": self._process.memory_info().rss / MB,
        }
        if self._gpus is not None:
            values.update(self._gpus.read())
        return [Point.now(key, value, step) for key, value in values.items()]

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self._tick()

    def _tick(self) -> None:
        try:
            self.emit(self.sample())
        except Exception:
            if not self._warned:
                self._warned = True
                logger.warning(
                    "system metrics: a sample failed (later failures are not logged)",
                    exc_info=True,
                )


class _Gpus:
    """The CUDA devices' memory and, where pynvml lets torch read it, utilisation."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.utilization = True

    @classmethod
    def probe(cls) -> _Gpus | None:
        # Imported here, not with the module: a trial has loaded torch by now, a test may not.
        import torch

        return cls(torch.cuda.device_count()) if torch.cuda.is_available() else None

    def read(self) -> dict[str, float]:
        import torch

        values: dict[str, float] = {}
        for i in range(self.count):
            values[f"system/gpu{i}/memory_allocated_mb"] = torch.cuda.memory_allocated(i) / MB
            values[f"system/gpu{i}/memory_reserved_mb"] = torch.cuda.memory_reserved(i) / MB
            if self.utilization:
                self._read_utilization(i, values)
        return values

    def _read_utilization(self, device: int, values: dict[str, float]) -> None:
        import torch

        try:
            values[f"system/gpu{device}/utilization_percent"] = float(
                torch.cuda.utilization(device)
            )
        except Exception:
            # torch reads it through pynvml, which may be missing: then no device has it.
            self.utilization = False
