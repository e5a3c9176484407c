"""Engine creation and the retry helper shared by every write of the store.

SQLite is used by several worker processes at once (one per trial), so it runs in WAL mode with a
long busy timeout, and writes are retried while the file is locked rather than failing a trial.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from tunefleet.redaction import redact_url

T = TypeVar("T")

#: Backends the store supports: its upserts use their ``ON CONFLICT`` clauses.
SUPPORTED_BACKENDS = ("sqlite", "postgresql")

SQLITE_BUSY_TIMEOUT_S = 60.0

#: Connections one process's store engine may hold on a server database: one kept open, two
#: more while threads overlap (the trial, its telemetry sink, the spool replay). With Optuna's
#: storage (``search.study.STORAGE_POOL``) a worker holds at most 5, so 16 workers and the
#: launcher stay under PostgreSQL's default ``max_connections`` of 100 (optuna#1347).
SERVER_POOL: dict[str, int] = {"pool_size": 1, "max_overflow": 2}
LOCKED_RETRY_DEADLINE_S = 60.0

_LOCKED_MESSAGES = ("database is locked", "database table is locked", "database is busy")


def create_store_engine(url: str) -> Engine:
    """Create an engine for ``url`` configured for concurrent use by several processes.

    Args:
        url: A SQLAlchemy URL, ``sqlite:///path.db`` or ``postgresql[+driver]://...``.

    Returns:
        The engine. For a SQLite file, the file's parent folder is created if missing.

    Raises:
        ValueError: ``url`` is not a URL or names an unsupported backend.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise ValueError(
            f"invalid database URL {redact_url(url)!r}: {redact_url(str(exc))}"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in SUPPORTED_BACKENDS:
        raise ValueError(
            f"unsupported database URL {redact_url(url)!r}: "
            f"backend {backend!r} is not one of {', '.join(SUPPORTED_BACKENDS)}"
        )
    if backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            # A fresh checkout has no runs/ folder; sqlite would fail with "unable to open".
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})
        event.listen(engine, "connect", _sqlite_on_connect)
        return engine
    # SQLite keeps SQLAlchemy's default pool: a file has no connection limit, and a bounded pool
    # would time out (30 s) while a connection waits out the 60 s busy timeout.
    return create_engine(parsed, pool_pre_ping=True, **SERVER_POOL)


def _sqlite_on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        # busy_timeout first: switching to WAL takes a lock that a concurrent process may hold.
        cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_S * 1000)}")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def is_locked_error(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite's transient "database is locked" (worth retrying)."""
    if not isinstance(exc, OperationalError):
        return False
    message = str(exc.orig if exc.orig is not None else exc).lower()
    return any(m in message for m in _LOCKED_MESSAGES)


def retry_locked(
    fn: Callable[[], T],
    *,
    deadline_s: float = LOCKED_RETRY_DEADLINE_S,
    first_delay_s: float = 0.05,
    max_delay_s: float = 2.0,
) -> T:
    """Call ``fn`` until it does not fail with "database is locked", for up to ``deadline_s``.

    ``fn`` must be a whole transaction (it is run again from the start), so that a retry never
    repeats half of one.

    Args:
        fn: The transaction to run.
        deadline_s: Seconds after which the last locked error is raised.
        first_delay_s: The first back-off; it doubles (with jitter) up to ``max_delay_s``.
        max_delay_s: The longest single back-off.

    Returns:
        What ``fn`` returns.

    Raises:
        sqlalchemy.exc.OperationalError: Still locked at the deadline, or any other operational
            error (raised at once).
    """
    deadline = time.monotonic() + deadline_s
    delay = first_delay_s
    while True:
        try:
            return fn()
        except OperationalError as exc:
            if not is_locked_error(exc):
                raise
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
            # Jitter so that processes which collided do not collide again in lockstep.
            time.sleep(min(delay * (0.5 + random.random()), remaining))
            delay = min(delay * 2, max_delay_s)
