"""The suite's PostgreSQL: a throwaway server when none answers (a contributor's laptop), the
machine's otherwise, a given URL over both. CI has a server, so the fallback is proven here."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from support.ports import free_port
from support.postgres import PORT_ENV, URL_ENV, fresh_database, postgres_server


def test_a_throwaway_server_serves_when_none_answers_and_is_deleted_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.setenv(PORT_ENV, str(free_port()))
    with postgres_server() as url:
        # pgserver listens on a Unix socket in its data folder, never on the probed port.
        data = Path(str(sa.make_url(url).query["host"]))
        assert (data / "PG_VERSION").is_file()
        with fresh_database(url, "tf_fallback", password="pw") as database:
            engine = sa.create_engine(database)
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text("CREATE TABLE t (x int)"))
                    conn.execute(sa.text("INSERT INTO t VALUES (1), (2)"))
                    assert conn.execute(sa.text("SELECT sum(x) FROM t")).scalar() == 3
                    name = conn.execute(sa.text("SELECT current_database()")).scalar()
            finally:
                engine.dispose()
        assert str(name).startswith("tf_fallback_")
    assert not data.exists()


def test_a_given_url_is_used_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(URL_ENV, "postgresql+psycopg2://someone@db.example:6543/admin")
    monkeypatch.setenv(PORT_ENV, str(free_port()))  # not probed, nothing started
    with postgres_server() as url:
        assert url == "postgresql+psycopg2://someone@db.example:6543/admin"


def test_a_port_that_is_not_a_number_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(URL_ENV, raising=False)
    monkeypatch.setenv(PORT_ENV, "54x2")
    with pytest.raises(ValueError, match=rf"\${PORT_ENV} .* not '54x2'"), postgres_server():
        pass
