"""A fresh database on the machine's PostgreSQL (127.0.0.1:5432, trust auth) for one test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

PG_ADMIN = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


@contextmanager
def fresh_database(prefix: str, *, password: str | None = None) -> Iterator[str]:
    """Creates a database, yields its URL (with ``password``, which trust auth ignores) and
    drops it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    user = f"postgres:{password}" if password else "postgres"
    try:
        yield f"postgresql+psycopg2://{user}@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
