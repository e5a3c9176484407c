"""The sink protocol every tracker backend implements, the registry of sink kinds, and batched
delivery to one sink.

A run's spool header describes its sinks (``describe_sinks``), so that any later process can
rebuild the same sinks from the header alone (``build_sinks``). Each kind registers both halves
under its name with ``register_sink``: tracking's own sinks in their ``*_sink.py`` modules here
(imported on first use), the platform's store sink in ``platform/store_sink.py``.
"""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tunefleet.redaction import REDACTED, redact_url
from tunefleet.tracking.events import Event, RunInfo
from tunefleet.tracking.spool import Cursors, Item, sibling

if TYPE_CHECKING:
    from tunefleet.config import SweepConfig

log = logging.getLogger(__name__)

MAX_BATCH = 1000
"""Events per ``write``: MLflow's ``log_batch`` takes at most 1,000 metrics a request."""


class Sink(Protocol):
    """A destination for a trial's events.

    Contract: ``write`` delivers a batch in order or raises; a batch it raised on is written
    again later, whole (after a crash, the batch in flight is written again too), so writing
    the same events twice must leave the tracker as if once — MLflow's store ignores a metric it
    already holds with the same key, step, timestamp and value. ``state`` is what the sink needs
    to continue in another process (the run ids it created); it is saved with the cursor.
    ``close`` releases resources; the run's status comes as an ``End`` event. Never called from
    the training thread.
    """

    name: str

    @property
    def run_id(self) -> str | None:
        """The run's id in the tracker, once known; None for a sink without runs."""
        ...

    def write(self, events: Sequence[Event]) -> None: ...

    def state(self) -> Mapping[str, Any]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class RunSetup:
    """What a run's sinks are described from: its config and what the platform resolved for it
    (tracking knows neither ``--out`` nor the store, only what it is handed here)."""

    config: SweepConfig
    local_dir: Path
    """Where a sink keeps local files (W&B's runs)."""
    mlflow_uri: str
    """The resolved MLflow tracking URI, with its real password (a header keeps it redacted)."""
    experiment_id: str | None = None
    """The MLflow experiment the run logs to; None: no MLflow run for it."""
    parent_run_id: str | None = None
    """The sweep's MLflow parent run; None: a run without a sweep."""
    store: Any = None
    """The platform's store, when the run reports to one (opaque to tracking)."""
    db_url: str | None = None
    """The store's URL, when there is a store."""


@dataclass(frozen=True)
class SinkSource:
    """What a sink is rebuilt from in any process: its description in the spool's header, its
    saved state, and what this process has (secrets, a store)."""

    spec: Mapping[str, Any]
    info: RunInfo
    spool: Path
    spool_id: str
    state: Mapping[str, Any]
    known_uris: Collection[str | None]
    """Real URIs this process knows, for a header's redacted ones."""
    store: Any

    @property
    def artifacts(self) -> Path:
        """Where files rendered for events go (beside the spool)."""
        return sibling(self.spool, ".artifacts")

    def real_uri(self, redacted: str) -> str | None:
        """The known URI whose redacted form is ``redacted``; one with nothing redacted is
        itself; None when its secret is not known in this process."""
        if REDACTED not in redacted:
            return redacted
        return next(
            (k for k in self.known_uris if k is not None and redact_url(k) == redacted), None
        )


Describe = Callable[[RunSetup], Mapping[str, Any] | None]
"""A sink's header description for a run (JSON, no secrets); None: not enabled for this run."""
Build = Callable[[SinkSource], Sink | None]
"""The sink a description names; None: it cannot be built in this process (say why in a log)."""


@dataclass(frozen=True)
class SinkKind:
    describe: Describe
    build: Build


_KINDS: dict[str, SinkKind] = {}


def register_sink(name: str, *, describe: Describe, build: Build) -> None:
    """Make the sink kind ``name`` known to ``describe_sinks`` and ``build_sinks``."""
    if not name.isidentifier():
        raise ValueError(f"a sink's name must be an identifier, got {name!r}")
    if name in _KINDS:
        raise ValueError(f"sink {name!r} is already registered")
    _KINDS[name] = SinkKind(describe, build)


@cache
def _import_tracking_sinks() -> None:
    # Imported here, not at the top: each of them imports this module to register itself.
    package = importlib.import_module("tunefleet.tracking")
    for module in pkgutil.iter_modules(package.__path__):
        if module.name.endswith("_sink"):
            importlib.import_module(f"{package.__name__}.{module.name}")


def _registered() -> dict[str, SinkKind]:
    """Every kind, tracking's own included: each ``*_sink`` module here registers itself."""
    _import_tracking_sinks()
    return _KINDS


def sink_names() -> list[str]:
    return sorted(_registered())


def describe_sinks(setup: RunSetup) -> dict[str, dict[str, Any]]:
    """The header's ``sinks``: each registered kind enabled for this run, by name."""
    described = {}
    for name, kind in _registered().items():
        spec = kind.describe(setup)
        if spec is not None:
            described[name] = dict(spec)
    return described


def build_sinks(
    header: Mapping[str, Any],
    spool: Path,
    cursors: Cursors,
    *,
    known_uris: Collection[str | None],
    store: Any,
) -> dict[str, Sink]:
    """The sinks a spool's header names, each continuing from its saved state. One that cannot
    be built here (a secret or a store this process lacks, a kind not registered) is left out
    with a warning."""
    run = header["run"]
    info = RunInfo(
        sweep=run["sweep"],
        trial=run["trial"],
        method=run["method"],
        params=run["params"],
        tags=run["tags"],
        run_name=run["run_name"],
        attempt=int(run.get("attempt", 1)),  # spools written before retries carried one
    )
    kinds = _registered()
    sinks: dict[str, Sink] = {}
    for name, spec in header["sinks"].items():
        if name not in kinds:
            log.warning(
                "%s: sink %r is not registered here (registered: %s)",
                spool.name,
                name,
                ", ".join(sink_names()),
            )
            continue
        source = SinkSource(
            spec=spec,
            info=info,
            spool=spool,
            spool_id=header["spool_id"],
            state=cursors.state(name),
            known_uris=known_uris,
            store=store,
        )
        sink = kinds[name].build(source)
        if sink is not None:
            sinks[name] = sink
    return sinks


def batches(items: Sequence[Item], limit: int = MAX_BATCH) -> list[Sequence[Item]]:
    return [items[i : i + limit] for i in range(0, len(items), limit)]


def deliver(sink: Sink, items: Sequence[Item], cursors: Cursors) -> int:
    """Write one batch and move the sink's cursor past every line it completed; returns the
    number of events written. Raises what the sink raised (the cursor stays)."""
    sink.write([item.event for item in items])
    done = [item.end for item in items if item.last]
    if done:
        cursors.advance(sink.name, offset=max(done), state=sink.state())
    return len(items)
