"""The sink protocol every tracker backend implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from tunefleet.tracking.events import Point


class Sink(Protocol):
    """A destination for a trial's points.

    Contract: ``write`` delivers a batch or raises (the bus retries the same batch later, so a
    sink must not half-apply one it raises on); ``finish`` is called once, from the bus thread,
    after the last ``write``; neither is ever called from the training thread.
    """

    name: str

    def write(self, points: Sequence[Point]) -> None: ...

    def finish(self, *, status: str) -> None: ...
