"""Waiting in tests for something another thread or process does: poll a condition with a
generous deadline, so a loaded machine is slow rather than wrong."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(
    condition: Callable[[], object],
    *,
    timeout_s: float = 120,
    every_s: float = 0.05,
    what: str = "",
) -> None:
    """Returns once ``condition()`` is truthy; fails the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting {timeout_s:.0f}s for {what}"
        time.sleep(every_s)
