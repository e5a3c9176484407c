"""The SQL store as a telemetry sink: a running trial's latest metrics, for ``tunefleet status``.

It lives in ``platform`` (not ``tracking``) because it writes the store, which ``tracking`` must
not know; it registers itself with tracking's sink registry when imported. Idempotent by
construction: it keeps the latest value per key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from tunefleet.platform.store import Store
from tunefleet.redaction import redact_url
from tunefleet.tracking.events import Event, Point
from tunefleet.tracking.sinks import RunSetup, SinkSource, register_sink


class StoreSink:
    name = "store"
    run_id: str | None = None

    def __init__(self, store: Store, *, sweep: str, trial: int, state: Mapping[str, Any]) -> None:
        self.store, self.sweep, self.trial = store, sweep, trial
        self.live: dict[str, Any] = dict(state.get("live") or {"step": 0, "metrics": {}})

    def write(self, events: Sequence[Event]) -> None:
        points = [e for e in events if isinstance(e, Point)]
        if not points:
            return
        metrics = dict(self.live["metrics"])
        for point in points:
            # Strict JSON in the store: a diverged value is a fact, kept as null.
            metrics[point.key] = point.value if math.isfinite(point.value) else None
        live = {"step": max(self.live["step"], *(p.step for p in points)), "metrics": metrics}
        self.store.upsert_trial(self.sweep, self.trial, live=live)
        self.live = live

    def state(self) -> dict[str, Any]:
        return {"live": self.live}

    def close(self) -> None:
        """The store is the worker's; it closes it."""


def _describe(setup: RunSetup) -> dict[str, Any] | None:
    if setup.store is None or setup.db_url is None:
        return None
    return {"db_url": redact_url(setup.db_url)}


def _build(source: SinkSource) -> StoreSink | None:
    # A replay without a store (``tunefleet sync`` with no database) leaves it to a later one.
    if source.store is None:
        return None
    return StoreSink(
        source.store, sweep=source.info.sweep, trial=source.info.trial, state=source.state
    )


register_sink("store", describe=_describe, build=_build)
