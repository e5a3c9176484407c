"""System metrics from a real monitor thread: the keys, plausible values, a prompt stop, and no
thread at all when turned off."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from tunefleet.tracking.events import Point
from tunefleet.tracking.system import SystemMonitor

KEYS = {"system/cpu_percent", "system/process_cpu_percent", "system/rss_mb"}


class Collected:
    def __init__(self) -> None:
        self.batches: list[list[Point]] = []
        self.arrived = threading.Event()

    def __call__(self, points: list[Point]) -> None:
        self.batches.append(points)
        if len(self.batches) >= 3:
            self.arrived.set()


def test_monitor_samples_on_its_thread_and_stops_promptly() -> None:
    collected = Collected()
    monitor = SystemMonitor(0.05, collected, step=lambda: 7)
    started_ms = int(time.time() * 1000)
    monitor.start()
    try:
        assert collected.arrived.wait(10)
    finally:
        stopping = time.monotonic()
        monitor.stop()
    assert time.monotonic() - stopping < 1.0
    count = len(collected.batches)
    time.sleep(0.2)
    assert len(collected.batches) == count  # nothing after stop
    assert not any(t.name == "tunefleet-system" for t in threading.enumerate())

    rss = psutil.Process().memory_info().rss / 2**20
    cores = psutil.cpu_count() or 1
    for batch in collected.batches:
        values = {p.key: p.value for p in batch}
        assert set(values) >= KEYS
        assert all(k in KEYS or k.startswith("system/gpu") for k in values)
        assert all(p.step == 7 and p.timestamp_ms >= started_ms for p in batch)
        assert rss / 2 < values["system/rss_mb"] < rss * 2
        assert 0 <= values["system/cpu_percent"] <= 100
        assert 0 <= values["system/process_cpu_percent"] <= 100 * cores


def test_first_sample_waits_one_interval() -> None:
    collected = Collected()
    with SystemMonitor(0.5, collected, step=lambda: 0):
        time.sleep(0.2)
        assert collected.batches == []


def test_zero_interval_starts_no_thread_and_emits_nothing() -> None:
    collected = Collected()
    before = threading.active_count()
    monitor = SystemMonitor(0, collected, step=lambda: 0)
    monitor.start()
    assert threading.active_count() == before
    time.sleep(0.1)
    monitor.stop()
    assert collected.batches == []


def test_a_failing_sample_is_logged_once_and_never_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[int] = []

    def broken_step() -> int:
        calls.append(1)
        raise RuntimeError("no step")

    with SystemMonitor(0.02, lambda points: None, step=broken_step):
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(calls) >= 3
    failures = [r for r in caplog.records if "system metrics" in r.getMessage()]
    assert len(failures) == 1


def test_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="every_s"):
        SystemMonitor(-1, lambda points: None, step=lambda: 0)


def test_gpu_keys_where_torch_sees_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GPU here, so torch.cuda is stood in for: memory per device, utilisation while
    pynvml answers and never again once it has failed."""
    import torch

    def utilization(device: int) -> float:
        if device == 1:
            raise ModuleNotFoundError("pynvml does not seem to be installed")
        return 40.0

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda i: (i + 1) * 2**20)
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda i: (i + 1) * 2**21)
    monkeypatch.setattr(torch.cuda, "utilization", utilization)
    monitor = SystemMonitor(60, lambda points: None, step=lambda: 3)
    with monitor:
        first = {p.key: p.value for p in monitor.sample()}
        second = {p.key: p.value for p in monitor.sample()}
    assert first["system/gpu0/memory_allocated_mb"] == 1.0
    assert first["system/gpu1/memory_reserved_mb"] == 4.0
    assert first["system/gpu0/utilization_percent"] == 40.0
    assert "system/gpu1/utilization_percent" not in first  # failed: the key is left out
    assert "system/gpu0/utilization_percent" not in second  # and not asked for again
    assert {"system/gpu0/memory_reserved_mb", "system/gpu1/memory_allocated_mb"} <= set(second)
