"""Alembic environment of tunefleet's tables.

Run by :func:`tunefleet.platform.store.store.migrate` with the connection to use in
``config.attributes["connection"]`` (so that the caller's lock and transaction cover the
migration); from the ``alembic`` command line it connects to ``sqlalchemy.url`` itself.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, create_engine

from tunefleet.platform.store.models import TABLE_PREFIX, VERSION_TABLE, Base


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    # Optuna's tables live in the same database; autogenerate must never propose dropping them.
    return type_ != "table" or (name is not None and name.startswith(TABLE_PREFIX))


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        include_name=_include_name,
        **kwargs,
    )


def _run_online(connection: Connection) -> None:
    _configure(
        connection=connection,
        # SQLite can only ALTER by copying a table; batch mode does that.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def _main() -> None:
    config = context.config
    if context.is_offline_mode():
        _configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_online(connection)
        return
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise ValueError("no database: set sqlalchemy.url or pass a connection in attributes")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run_online(conn)
            conn.commit()
    finally:
        engine.dispose()


_main()
