"""Shared fixtures: real SQLite files and a real throwaway PostgreSQL cluster.

PostgreSQL comes from TEST_DATABASE_URL or a cluster started here with initdb/pg_ctl.
Where none can be started, PostgreSQL tests are skipped with the reason, unless
REQUIRE_POSTGRES=1 (set by .ci/run), which turns that into an error.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from optimizer.db import create_db_engine, migrate
from tests.support.http_client import ClientMaker
from tests.support.pg import PgCluster, PostgresUnavailable, start_cluster
from tests.support.required import missing_tool

# No test reaches the network: a key in the developer's shell must not send anything to the
# real API (services started by the tests inherit this environment), and a client built
# with a key by mistake talks to a closed local port. Tests that want Claude use
# tests/support/fake_anthropic.py.
for _name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "LLM_PROVIDER"):
    os.environ.pop(_name, None)
os.environ["ANTHROPIC_BASE_URL"] = "http://127.0.0.1:9"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server whose databases the tests may create and drop."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    cluster: PgCluster | None = None
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        missing_tool("REQUIRE_POSTGRES", f"no PostgreSQL could be started ({exc})")
    try:
        yield cluster.url
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database on the test server, dropped afterwards."""
    name = f"pw_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(
        make_url(pg_server_url).set(drivername="postgresql+psycopg"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(pg_server_url).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'prompt_worker.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request) -> str:
    """Each test using this runs once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("pg_url")


def _migrated(url: str) -> Iterator[Engine]:
    engine = create_db_engine(url)
    migrate(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """A migrated engine, on SQLite and on PostgreSQL."""
    yield from _migrated(db_url)


@pytest.fixture
def sqlite_engine(sqlite_url: str) -> Iterator[Engine]:
    yield from _migrated(sqlite_url)


@pytest.fixture
def pg_engine(pg_url: str) -> Iterator[Engine]:
    yield from _migrated(pg_url)


@pytest.fixture
async def make_client() -> AsyncIterator[ClientMaker]:
    """`await make_client(engine, settings, **overrides)`: a started test client on the real
    app (tests/support/http_client.py); every client it made is closed afterwards."""
    maker = ClientMaker()
    yield maker
    await maker.close()
