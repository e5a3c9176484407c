"""PostgreSQL for tests: the server the suite uses, and a fresh database on it per test.

The server is, in this order:

1. the one at ``$TUNEFLEET_TEST_POSTGRES_URL`` (an admin URL: it may create databases);
2. the machine's, at 127.0.0.1:``$TUNEFLEET_TEST_POSTGRES_PORT`` (default 5432), trust auth as
   ``postgres``, when something listens there (CI's case);
3. otherwise a throwaway one from the ``pgserver`` package (the dev extra), started for the test
   session on a Unix socket in a temporary folder and deleted afterwards. Point the port at one
   nothing listens on to force it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from support.ports import listening

URL_ENV = "TUNEFLEET_TEST_POSTGRES_URL"
PORT_ENV = "TUNEFLEET_TEST_POSTGRES_PORT"
DEFAULT_PORT = 5432


def machine_port() -> int:
    raw = os.environ.get(PORT_ENV, str(DEFAULT_PORT))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ValueError(f"${PORT_ENV} must be a TCP port number, not {raw!r}")
    return int(raw)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The admin URL of the server the tests use (see the module's doc), while it lasts."""
    given = os.environ.get(URL_ENV)
    if given:
        yield given
        return
    port = machine_port()
    if listening("127.0.0.1", port):
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/postgres"
        return
    with throwaway_server() as url:
        yield url


@contextmanager
def throwaway_server() -> Iterator[str]:
    """A PostgreSQL of its own (pgserver's binaries, trust auth, a Unix socket only); its data
    folder is deleted afterwards. As root, pgserver runs it as a system user ``pgserver``
    (created with ``useradd`` the first time), since PostgreSQL refuses to run as root."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns where XDG_RUNTIME_DIR is unset (containers, CI) and falls back.
            warnings.simplefilter("ignore")
            import pgserver
    except ImportError as exc:
        raise RuntimeError(
            f"no PostgreSQL answers at 127.0.0.1:{machine_port()} and pgserver is not installed "
            f"to start one: `pip install -e '.[dev]'`, or set ${URL_ENV}"
        ) from exc
    # Not pytest's tmp_path: pgserver opens every folder above the data folder to its user.
    folder = Path(tempfile.mkdtemp(prefix="tunefleet-pg-"))
    try:
        server = pgserver.get_server(folder / "pgdata", cleanup_mode="delete")
        try:
            yield server.get_uri().replace("postgresql://", "postgresql+psycopg2://", 1)
        finally:
            server.cleanup()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def connection_share(server_url: str, *, exclusive: bool) -> Iterator[None]:
    """A lock on the server's connections across the suite's processes (``make test`` runs
    several): a test that needs nearly all of PostgreSQL's 100 connections (16 workers) holds
    it ``exclusive``; every other database is made under a shared hold, so they never meet."""
    key = hashlib.sha256(server_url.encode()).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"tunefleet-tests-pg-{key}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextmanager
def fresh_database(
    server_url: str, prefix: str, *, password: str | None = None, exclusive: bool = False
) -> Iterator[str]:
    """Creates a database on the server at ``server_url``, yields its URL (with ``password``,
    which trust auth ignores) and drops it afterwards; ``exclusive``: no other test of the suite
    holds a database meanwhile (``connection_share``)."""
    with connection_share(server_url, exclusive=exclusive):
        yield from _fresh_database(server_url, prefix, password=password)


def _fresh_database(server_url: str, prefix: str, *, password: str | None) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    server = sa.make_url(server_url)
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = server.set(database=name)
        if password is not None:
            url = url.set(password=password)
        yield url.render_as_string(hide_password=False)
    finally:
        try:
            with admin.connect() as conn:
                # FORCE: Optuna's and the store's pools may still hold connections.
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            admin.dispose()
