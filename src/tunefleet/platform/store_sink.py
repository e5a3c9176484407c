"""The SQL store as a telemetry sink: a running trial's latest metrics and progress, for
``tunefleet status`` and the sweep's live progress line.

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
from tunefleet.tracking.events import Event, Point, Progress
from tunefleet.tracking.sinks import RunSetup, SinkSource, register_sink


class StoreSink:
    """Keeps ``live`` on the trial's row: ``step`` and ``at_ms`` (the latest point's step and
    time), ``metrics`` (each key's latest value), and from the attempt's ``Progress``: ``total``
    steps and where and when this attempt started (``since_step``, ``since_ms``), with the
    ``worker`` and ``host`` it runs on (``platform.progress`` reads an ETA from these)."""

    name = "store"
    run_id: str | None = None

    def __init__(
        self,
        store: Store,
        *,
        sweep: str,
        trial: int,
        where: Mapping[str, str],
        state: Mapping[str, Any],
    ) -> None:
        self.store, self.sweep, self.trial, self.where = store, sweep, trial, dict(where)
        self.live: dict[str, Any] = dict(state.get("live") or {"step": 0, "metrics": {}})

    def write(self, events: Sequence[Event]) -> None:
        live = dict(self.live)
        for event in events:
            if isinstance(event, Progress):
                live.update(
                    total=event.total,
                    since_step=event.step,
                    since_ms=event.timestamp_ms,
                    step=max(live["step"], event.step),
                    at_ms=event.timestamp_ms,
                    **self.where,
                )
        points = [e for e in events if isinstance(e, Point)]
        if points:
            metrics = dict(live["metrics"])
            for point in points:
                # Strict JSON in the store: a diverged value is a fact, kept as null.
                metrics[point.key] = point.value if math.isfinite(point.value) else None
            latest = max(points, key=lambda p: (p.step, p.timestamp_ms))
            live.update(metrics=metrics, step=max(live["step"], latest.step))
            live["at_ms"] = max(live.get("at_ms", 0), latest.timestamp_ms)
        if live != self.live:
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
    tags = source.info.tags
    where = {"worker": tags.get("tunefleet.worker", "?"), "host": tags.get("tunefleet.host", "?")}
    return StoreSink(
        source.store,
        sweep=source.info.sweep,
        trial=source.info.trial,
        where=where,
        state=source.state,
    )


register_sink("store", describe=_describe, build=_build)
