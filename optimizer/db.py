"""Engine creation, the SQLite settings that let several writers share a file, and migrations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import Session, sessionmaker

from optimizer.errors import ConfigError, PromptWorkerError

SQLITE_BUSY_TIMEOUT_MS = 15_000
READ_ONLY = "prompt_worker_read_only"


def read_only(engine: Engine) -> Engine:
    """The engine for transactions that only read. On SQLite they begin DEFERRED, so they
    never wait for the write lock; on PostgreSQL nothing changes."""
    return engine.execution_options(**{READ_ONLY: True})


def _enable_sqlite_concurrency(engine: Engine) -> None:
    """WAL lets readers run beside a writer; BEGIN IMMEDIATE takes the write lock up front,
    so a transaction never has to upgrade a read lock and fail with SQLITE_BUSY; the busy
    timeout makes the CLI, the HTTP API and the worker wait for each other instead of erroring."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # let SQLAlchemy's "begin" hook issue BEGIN
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Read-only work (see `read_only`) takes no write lock: under WAL it reads a
        # snapshot while a writer runs, instead of queueing behind it.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN DEFERRED")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def _refuse_to_create_sqlite_file(engine: Engine) -> None:
    """Open the SQLite file read-write but never create it (SQLite's URI `mode=rw`): a
    command that expects a database must not leave an empty one wherever it ran."""

    @event.listens_for(engine, "do_connect")
    def _on_do_connect(
        _dialect: Any, _record: Any, cargs: list[Any], cparams: dict[str, Any]
    ) -> None:
        if cparams.get("uri") or not cargs or cargs[0] == ":memory:":
            return  # a URI filename says for itself whether to create
        cargs[0] = f"file:{quote(str(cargs[0]), safe='/')}?mode=rw"
        cparams["uri"] = True


def create_db_engine(url: str, *, pool_size: int = 5, create_missing: bool = True) -> Engine:
    """`create_missing=False`: a SQLite URL naming a missing file fails on connect instead
    of creating the file (see `sqlite_file` to say which file)."""
    try:
        engine = _create_engine(make_url(url), pool_size)
    except ArgumentError:
        raise ConfigError(
            "DATABASE_URL is not a valid database URL (expected e.g. "
            "sqlite:///prompt_worker.db or postgresql://user:pass@host/db)"
        ) from None
    except (ValueError, ImportError) as exc:  # a bad port, a driver that is not installed
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"DATABASE_URL is not usable: {first}") from None
    if not create_missing and engine.dialect.name == "sqlite":
        _refuse_to_create_sqlite_file(engine)
    return engine


def sqlite_file(url: str | URL) -> Path | None:
    """The absolute path of the file a SQLite DATABASE_URL names, so an error can say where
    it looked. A relative path is taken from the working directory, as SQLite does. None for
    other databases, in-memory ones and URI filenames (`?uri=true`; those choose with
    `mode=` themselves)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri"):
        return None
    if parsed.database in (None, "", ":memory:"):
        return None
    return Path(os.path.abspath(parsed.database))


def describe(url: str | URL) -> str:
    """The database as a person can find it, without credentials: a SQLite file's absolute
    path, otherwise driver, host, port and database name (user, password and query left out,
    as the query may carry a password too)."""
    path = sqlite_file(url)
    if path is not None:
        return str(path)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "at DATABASE_URL"
    return URL.create(
        parsed.drivername, host=parsed.host, port=parsed.port, database=parsed.database
    ).render_as_string()


def _create_engine(parsed: URL, pool_size: int) -> Engine:
    # hide_parameters: bound values (transcripts, unit ids) stay out of the text of every
    # error SQLAlchemy raises, and so out of tracebacks in the logs.
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        engine = create_engine(
            parsed,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )
        _enable_sqlite_concurrency(engine)
        return engine
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        return create_engine(
            parsed,
            hide_parameters=True,
            pool_pre_ping=True,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=10,
            connect_args={"connect_timeout": 5},
        )
    raise ConfigError(f"DATABASE_URL must point at sqlite or postgresql, got {parsed.drivername!r}")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _alembic_dir() -> Path:
    here = Path(__file__).resolve().parent.parent / "alembic"
    if (here / "env.py").is_file():
        return here
    cwd = Path.cwd() / "alembic"
    if (cwd / "env.py").is_file():
        return cwd
    raise ConfigError("cannot find the alembic/ migrations folder; run from the project root")


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_alembic_dir()))
    cfg.attributes["configure_logging"] = False
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to head. Safe to run on every start and from several replicas:
    on PostgreSQL an advisory lock serialises concurrent runs."""
    with migration_connection(engine) as conn:
        cfg = alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextmanager
def migration_connection(engine: Engine) -> Iterator[Connection]:
    """One transaction for a migration. On SQLite, foreign keys are off while it runs and
    checked before it commits: batch mode changes a constraint by copying the table and
    dropping the old one, and with foreign keys on that DROP deletes (ON DELETE CASCADE) or
    empties (SET NULL) every row that refers to it. SQLite ignores the pragma inside a
    transaction, so it is set on the raw connection before BEGIN."""
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        if sqlite:
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        try:
            with conn.begin():
                if conn.dialect.name == "postgresql":
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7217001)")
                yield conn
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").all()):
                    raise PromptWorkerError(
                        f"the migration left {len(broken)} row(s) referring to missing rows "
                        f"(first: {tuple(broken[0])}); nothing was changed"
                    )
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upsert_insert(dialect: str, table: Table) -> Any:
    """INSERT with ON CONFLICT (`on_conflict_do_nothing` / `_do_update`) in the dialect's own
    construct: the two databases this service runs on spell it alike but SQLAlchemy does not."""
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise PromptWorkerError(f"prompt-worker needs PostgreSQL or SQLite, not {dialect}")


# Enough for the per-unit groups of a rollup pass or an analysis to stay in memory: with
# PostgreSQL's default 4 MB they spill to disk past ~100k units and take twice as long.
GROUPING_WORK_MEM = "64MB"


def prepare_rollup_transaction(session: Session) -> None:
    """On PostgreSQL, for the session's transaction only: GROUPING_WORK_MEM, and no JIT.
    A rollup statement reads a few thousand new rows, but once the table holds millions
    the planner's estimates pass jit_above_cost and PostgreSQL compiles the statement's
    expressions on every run: 100-750 ms of compiling for 2-30 ms of work, growing with
    the history (benchmarks/monitoring.py measured a pass at 7.3M conversations drop from
    11.3 s to 4.5 s without it)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text(f"SET LOCAL work_mem = '{GROUPING_WORK_MEM}'"))
        session.execute(text("SET LOCAL jit = off"))
