"""System metrics from a real monitor thread: the keys, plausible values, a prompt stop, and no
thread at all when turned off. Nothing here depends on how loaded the machine is: waits are for
events with generous deadlines, and what is asserted are counts, never durations."""

from __future__ import annotations

import threading
import time

import psutil
import pytest

from support.waiting import wait_for
from tunefleet.tracking.events import Point
from tunefleet.tracking.system import SystemMonitor

KEYS = {"system/cpu_percent", "system/process_cpu_percent", "system/rss_mb"}


class Collected:
    def __init__(self) -> None:
        self.batches: list[list[Point]] = []
        self.first = threading.Event()
        self.arrived = threading.Event()

    def __call__(self, points: list[Point]) -> None:
        self.batches.append(points)
        self.first.set()
        if len(self.batches) >= 3:
            self.arrived.set()


def monitor_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tunefleet-system"]


def test_monitor_samples_on_its_thread_and_stops_promptly() -> None:
    collected = Collected()
    monitor = SystemMonitor(0.05, collected, step=lambda: 7)
    started_ms = int(time.time() * 1000)
    monitor.start()
    try:
        assert collected.arrived.wait(60)
    finally:
        monitor.stop()
    # Nothing after stop: the thread is gone (stop() did not give up after its 5 s join).
    assert not monitor_threads()

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


def test_first_sample_waits_one_interval_and_stop_cuts_the_wait_short() -> None:
    """A minute-long interval: a first sample within the generous wait below could only be one
    taken at start. Stopping then ends the thread mid-wait (stop joins for at most 5 s)."""
    collected = Collected()
    monitor = SystemMonitor(60, collected, step=lambda: 0)
    with monitor:
        assert monitor_threads()
        assert not collected.first.wait(1.0)
    assert not monitor_threads()
    assert collected.batches == []


def test_zero_interval_starts_no_thread_and_emits_nothing() -> None:
    collected = Collected()
    before = threading.active_count()
    monitor = SystemMonitor(0, collected, step=lambda: 0)
    monitor.start()
    assert threading.active_count() == before
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
        wait_for(lambda: len(calls) >= 3, timeout_s=60, what="three failed samples")
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
