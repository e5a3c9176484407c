"""The spool: a trial's events in an append-only file on local disk, and each sink's cursor.

Layout, beside each other under ``OUT/spool/SWEEP/``::

    trial-3-1a2b3c4d.spool          line 1: the header (JSON); then one JSON line per append
    trial-3-1a2b3c4d.cursors.json   {sink name: {"offset": bytes acknowledged, "state": {...}}}
    trial-3-1a2b3c4d.lock           held (flock) by the process writing or replaying the spool
    trial-3-1a2b3c4d.artifacts/     files rendered for events (the evaluation report)

The training thread appends with buffered writes and flushes to the OS at every evaluation and at
trial end, so a killed process loses at most the points since its last evaluation; the bus thread
fsyncs after each flush. A sink's cursor only moves past a line once the sink acknowledged every
event of it, so a replay resends at most the batch that was in flight.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tunefleet.tracking.events import Event, Point, decode_line, encode_event, encode_points

SPOOL_VERSION = 1
SUFFIX = ".spool"


@dataclass(frozen=True)
class Item:
    """An event and where its spool line ends; ``last`` marks the line's last event."""

    event: Event
    end: int
    last: bool


class SpoolLocked(Exception):
    """Another live process writes or replays this spool."""


class SpoolLock:
    """An exclusive ``flock`` on the spool's lock file: released by the OS if the holder dies,
    which is how a replay tells a dead writer's spool from a live one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> SpoolLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise SpoolLocked(str(self.path)) from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def sibling(spool: Path, suffix: str) -> Path:
    return spool.with_name(spool.name.removesuffix(SUFFIX) + suffix)


def new_spool_path(folder: Path, stem: str) -> Path:
    """A fresh spool path: the random part keeps a re-used trial number from appending to an
    old trial's spool."""
    return folder / f"{stem}-{secrets.token_hex(4)}{SUFFIX}"


class SpoolWriter:
    """Appends a trial's events; only the training thread calls ``append`` and ``flush``."""

    def __init__(self, path: Path, header: Mapping[str, Any]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.lock = SpoolLock(sibling(path, ".lock")).acquire()
        try:
            self._file: IO[bytes] = open(path, "xb")  # noqa: SIM115 - lives with the writer
        except BaseException:
            self.lock.release()
            raise
        self._io = threading.Lock()
        line = _line({"tunefleet_spool": SPOOL_VERSION, **header})
        self._file.write(line)
        self.size = len(line)
        self.flush()

    def write(self, events: Sequence[Event]) -> list[Item]:
        """Append events (a run of points shares one line); returns them with their offsets."""
        items: list[Item] = []
        for group in _lines(events):
            line = _line(encode_points(group) if isinstance(group, list) else encode_event(group))
            with self._io:
                self._file.write(line)
                self.size += len(line)
                end = self.size
            members = group if isinstance(group, list) else [group]
            items.extend(Item(e, end, i == len(members) - 1) for i, e in enumerate(members))
        return items

    def flush(self) -> None:
        """Hand buffered lines to the OS: they now survive this process being killed."""
        with self._io:
            self._file.flush()

    def fsync(self) -> None:
        """Make flushed lines survive the machine going down (called off the training thread)."""
        with self._io:
            fd = self._file.fileno()
        os.fsync(fd)

    def close(self) -> None:
        with self._io:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        self.lock.release()


def _lines(events: Sequence[Event]) -> Iterator[list[Point] | Event]:
    run: list[Point] = []
    for event in events:
        if isinstance(event, Point):
            run.append(event)
            continue
        if run:
            yield run
            run = []
        yield event
    if run:
        yield run


def _line(record: Mapping[str, Any]) -> bytes:
    return (json.dumps(record, separators=(",", ":"), default=str) + "\n").encode()


def read_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        header: dict[str, Any] = json.loads(f.readline())
    if header.get("tunefleet_spool") != SPOOL_VERSION:
        raise ValueError(f"{path}: not a tunefleet spool of version {SPOOL_VERSION}")
    return header


def read_items(path: Path, start: int = 0) -> Iterator[Item]:
    """The events after byte ``start`` (0: after the header). A torn last line (the writer was
    killed mid-write) is not an event: it is skipped."""
    with open(path, "rb") as f:
        if start == 0:
            f.readline()
        else:
            f.seek(start)
        offset = f.tell()
        for raw in f:
            offset += len(raw)
            if not raw.endswith(b"\n"):
                return
            events = decode_line(json.loads(raw))
            for i, event in enumerate(events):
                yield Item(event, offset, i == len(events) - 1)


def complete_length(path: Path) -> int:
    """Bytes up to the end of the last whole line."""
    data = path.read_bytes()
    return data.rfind(b"\n") + 1


def append_end(path: Path, status: str) -> None:
    """Close a dead writer's spool with an end event (after cutting a torn last line), so that a
    replay finishes the runs it left open. Only under the spool's lock."""
    from tunefleet.tracking.events import End

    keep = complete_length(path)
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.seek(keep)
        f.write(_line(encode_event(End(status))))
        f.flush()
        os.fsync(f.fileno())


class Cursors:
    """Each sink's acknowledged offset and its own state (run ids it created), persisted with
    an atomic replace after every acknowledged batch."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._data: dict[str, dict[str, Any]] = {}
        if path.is_file():
            self._data = json.loads(path.read_text())

    def offset(self, sink: str) -> int:
        return int(self._data.get(sink, {}).get("offset", 0))

    def state(self, sink: str) -> dict[str, Any]:
        return dict(self._data.get(sink, {}).get("state", {}))

    def advance(self, sink: str, *, offset: int, state: Mapping[str, Any]) -> None:
        self._data[sink] = {"offset": offset, "state": dict(state)}
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self._data, sort_keys=True))
        os.replace(tmp, self.path)
