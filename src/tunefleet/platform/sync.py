"""Replaying spools: what a sink did not acknowledge (a tracker that was down, a worker that was
killed) is sent again from the sink's cursor, by ``tunefleet sync`` and at every worker start.

A spool is replayed only under its lock: a live writer holds it, so a running trial is never
touched, and a killed writer's lock is released by the OS. A spool whose writer died without
an end event gets one (FAILED), so its runs are closed too; unless a retry takes it over
(``hand_over``): then it ends CONTINUED, and the retry's own spool continues its runs.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tunefleet.platform.store_sink  # noqa: F401 - registers the "store" sink spools name
from tunefleet.platform.layout import Layout
from tunefleet.tracking.events import CONTINUED, End, decode_line, training_step
from tunefleet.tracking.sinks import batches, build_sinks, deliver
from tunefleet.tracking.spool import (
    SUFFIX,
    Cursors,
    SpoolLock,
    SpoolLocked,
    append_end,
    read_header,
    read_items,
    sibling,
)

log = logging.getLogger(__name__)


@dataclass
class SpoolSync:
    """What one replay did: events sent and left per sink, and why some were left."""

    spool: Path
    sent: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    skipped: str | None = None

    @property
    def complete(self) -> bool:
        return self.skipped is None and not any(self.left.values()) and not self.errors


def spools(layout: Layout, name: str | None) -> list[Path]:
    root = layout.spool_dir(name) if name else layout.spool_root
    pattern = f"*{SUFFIX}" if name else f"*/*{SUFFIX}"
    return sorted(root.glob(pattern)) if root.is_dir() else []


def sync(
    layout: Layout,
    *,
    name: str | None = None,
    known_uris: Collection[str | None] = (),
    store: Any = None,
) -> list[SpoolSync]:
    """Replay every spool of sweep ``name`` (all sweeps: None) under ``layout``."""
    return [sync_spool(path, known_uris=known_uris, store=store) for path in spools(layout, name)]


def sync_spool(path: Path, *, known_uris: Collection[str | None], store: Any) -> SpoolSync:
    result = SpoolSync(path)
    try:
        lock = SpoolLock(sibling(path, ".lock")).acquire()
    except SpoolLocked:
        result.skipped = "in use by a live process"
        return result
    try:
        _replay(path, result, known_uris=known_uris, store=store)
    finally:
        lock.release()
    return result


@dataclass(frozen=True)
class HandOver:
    """What a retry takes over from its dead attempt's spool."""

    header: dict[str, Any]
    """The dead attempt's header: the runs' identity (spool id, each sink's run id)."""
    logged_through: int | None
    """The last training step the dead attempt spooled (so, at most, delivered)."""
    replayed: SpoolSync


def hand_over(
    path: Path, *, known_uris: Collection[str | None], store: Any, wait_s: float = 10.0
) -> HandOver:
    """Replay a dead attempt's spool before its retry starts, leaving its runs open for the
    retry. A spool still locked after ``wait_s`` (its worker was taken for dead but lives on,
    or a replay holds it) is read as it stands; its writer or ``tunefleet sync`` delivers the
    rest."""
    result = SpoolSync(path)
    lock = _acquire(path, wait_s)
    if lock is None:
        result.skipped = "in use by a live process"
    else:
        try:
            _replay(path, result, known_uris=known_uris, store=store, end=CONTINUED)
        finally:
            lock.release()
    return HandOver(read_header(path), last_step(path), result)


def _acquire(path: Path, wait_s: float) -> SpoolLock | None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return SpoolLock(sibling(path, ".lock")).acquire()
        except SpoolLocked:
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.2)


def ended(path: Path) -> bool:
    """Whether the spool's last whole line is an end event (its writer closed it). A writer
    killed after its sinks took everything has none: its runs still need closing."""
    with open(path, "rb") as f:
        f.seek(max(0, path.stat().st_size - 4096))
        lines = [line for line in f.read().split(b"\n") if line.strip()]
    if not lines:
        return False
    try:
        events = decode_line(json.loads(lines[-1]))
    except (ValueError, KeyError):  # a torn last line, or the header of an empty spool
        return False
    return any(isinstance(event, End) for event in events)


def last_step(path: Path) -> int | None:
    """The last training step a spool holds an event for; None: none."""
    steps = [training_step(item.event) for item in read_items(path)]
    return max((s for s in steps if s is not None), default=None)


def _replay(
    path: Path,
    result: SpoolSync,
    *,
    known_uris: Collection[str | None],
    store: Any,
    end: str = "FAILED",
) -> None:
    header = read_header(path)
    cursors = Cursors(sibling(path, ".cursors.json"))
    size = path.stat().st_size
    if all(cursors.offset(name) == size for name in header["sinks"]) and ended(path):
        result.sent = {name: 0 for name in header["sinks"]}
        _record_run_ids(header, cursors, store)  # a killed writer could not
        return  # every sink has everything: the usual case, decided without reading the file
    everything = list(read_items(path))
    if not any(isinstance(item.event, End) for item in everything):
        append_end(path, end)  # its writer died: no one else will end its runs
        everything = list(read_items(path))
    sinks = build_sinks(header, path, cursors, known_uris=known_uris, store=store)
    for sink_name in header["sinks"]:
        if sink_name not in sinks:
            result.errors[sink_name] = "not configured in this process"
    for sink in sinks.values():
        acknowledged = cursors.offset(sink.name)
        items = [item for item in everything if item.end > acknowledged]
        sent = 0
        try:
            for batch in batches(items):
                sent += deliver(sink, batch, cursors)
        except Exception as exc:
            result.errors[sink.name] = f"{type(exc).__name__}: {exc}"
        finally:
            _close(sink)
        result.sent[sink.name], result.left[sink.name] = sent, len(items) - sent
    _record_run_ids(header, cursors, store)


def _close(sink: Any) -> None:
    try:
        sink.close()
    except Exception:
        log.warning("sink %s failed to close", sink.name, exc_info=True)


def _record_run_ids(header: dict[str, Any], cursors: Cursors, store: Any) -> None:
    """A run created by the replay (its tracker was down all trial long) gets into the store."""
    run_id = cursors.state("mlflow").get("run_id")
    if store is None or "store" not in header["sinks"] or not run_id:
        return
    run = header["run"]
    trial = store.trial(run["sweep"], run["trial"])
    if trial is not None and trial.mlflow_run_id != run_id:
        store.upsert_trial(run["sweep"], run["trial"], mlflow_run_id=run_id)


def replay_in_background(
    layout: Layout, *, name: str, known_uris: Collection[str | None], store: Any
) -> threading.Thread:
    """At worker start: replay the sweep's unfinished spools without holding the worker up (a
    tracker still down must not delay training)."""

    def run() -> None:
        try:
            for result in sync(layout, name=name, known_uris=known_uris, store=store):
                if result.sent and any(result.sent.values()):
                    log.info("replayed %s: %s", result.spool.name, result.sent)
        except Exception:
            log.warning("replaying spools failed", exc_info=True)

    thread = threading.Thread(target=run, name="tunefleet-replay", daemon=True)
    thread.start()
    return thread
