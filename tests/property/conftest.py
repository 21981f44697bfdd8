"""One migrated database per test module and per database kind, shared by a module's
hypothesis examples: a fresh database per example would cost far more than the examples."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from optimizer.db import create_db_engine, migrate


@contextmanager
def _pg_database(server_url: str) -> Iterator[str]:
    """A new empty database on the test server, dropped afterwards."""
    name = f"pw_prop_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        make_url(server_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        url = make_url(server_url).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]
)
def module_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    """A migrated engine kept for the whole module, on SQLite and on PostgreSQL."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('prop') / 'pw.db'}"
        else:
            url = stack.enter_context(_pg_database(request.getfixturevalue("pg_server_url")))
        engine = create_db_engine(url)
        stack.callback(engine.dispose)  # before the database is dropped
        migrate(engine)
        yield engine
