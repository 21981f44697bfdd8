"""The migrated schema as admins see it (plain SQL against optimization_jobs), and the
migrations themselves: they build exactly the models and undo cleanly."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models import Base, UsedSignature
from optimizer.db import (
    alembic_config,
    create_db_engine,
    current_revision,
    head_revision,
    migrate,
    migration_connection,
)
from optimizer.runtime import queue


def insert_sql(engine: Engine, sql: str, **params: object) -> int:
    with engine.begin() as conn:
        conn.execute(text(sql), params)
        return int(conn.execute(text("SELECT max(id) FROM optimization_jobs")).scalar_one())


def test_plain_sql_insert_gets_every_default(engine):
    before = datetime.now(UTC) - timedelta(seconds=5)
    job_id = insert_sql(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
    after = datetime.now(UTC) + timedelta(seconds=5)
    job = queue.get_job(engine, job_id)
    assert job.type == "full_cycle"
    assert job.status == "pending"
    assert job.priority == 0
    assert job.payload == "{}"
    assert job.attempts == 0
    assert job.max_attempts == 3
    assert job.progress == 0
    assert job.cancel_requested is False
    assert job.result is None and job.error is None and job.dedupe_key is None
    assert job.locked_by is None and job.lease_expires_at is None
    assert job.started_at is None and job.finished_at is None
    assert before <= job.run_after <= after
    assert before <= job.created_at <= after
    assert job.run_after.tzinfo is not None


def test_plain_sql_job_is_claimable(engine):
    job_id = insert_sql(
        engine,
        "INSERT INTO optimization_jobs (type, payload) "
        "VALUES ('pattern_analysis', '{\"prompt\": \"support\"}')",
    )
    # The default run_after is the database's clock; claim a little after it.
    claimed = queue.claim(
        engine, "w1", lease_seconds=60, now=datetime.now(UTC) + timedelta(seconds=2)
    )
    assert claimed is not None
    assert claimed.id == job_id
    assert claimed.status == "running"
    assert claimed.attempts == 1
    assert claimed.to_dict()["payload"] == {"prompt": "support"}


def test_the_job_types_are_not_listed_in_the_database(engine):
    # The job specs keep the list (API and CLI refuse an unknown type; the worker fails a
    # row of one at once, see tests/faults/test_corrupt_rows.py): a new type needs no
    # migration.
    insert_sql(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cylce')")
    assert queue.count_by_status(engine) == {"pending": 1}


def test_revision_0004_drops_the_type_check_and_its_downgrade_restores_it(db_url: str) -> None:
    engine = create_db_engine(db_url)
    sql = "INSERT INTO optimization_jobs (type) VALUES ('full_cylce')"
    try:
        migrate(engine)
        _downgrade(engine, "0003")
        with pytest.raises(IntegrityError, match="(?i)check"):
            insert_sql(engine, sql)
        insert_sql(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
        migrate(engine)
        insert_sql(engine, sql)
        assert queue.count_by_status(engine) == {"pending": 2}
        with pytest.raises(IntegrityError):  # the other checks survive the rebuilt table
            insert_sql(
                engine, "INSERT INTO optimization_jobs (type, progress) VALUES ('full_cycle', 101)"
            )
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO optimization_jobs (type, status) VALUES ('full_cycle', 'done')",
        "INSERT INTO optimization_jobs (type, progress) VALUES ('full_cycle', 101)",
        "INSERT INTO optimization_jobs (type, attempts) VALUES ('full_cycle', -1)",
        "INSERT INTO optimization_jobs (type, max_attempts) VALUES ('full_cycle', 0)",
    ],
)
def test_other_check_constraints(engine, sql):
    with pytest.raises(IntegrityError):
        insert_sql(engine, sql)


def test_missing_type_is_rejected(engine):
    with pytest.raises(IntegrityError):
        insert_sql(engine, "INSERT INTO optimization_jobs (priority) VALUES (1)")


def test_duplicate_dedupe_key_is_rejected(engine):
    sql = "INSERT INTO optimization_jobs (type, dedupe_key) VALUES ('full_cycle', :key)"
    insert_sql(engine, sql, key="tick:1")
    with pytest.raises(IntegrityError, match="(?i)unique|duplicate"):
        insert_sql(engine, sql, key="tick:1")
    insert_sql(engine, sql, key="tick:2")
    # NULL keys never collide.
    insert_sql(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
    insert_sql(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
    assert queue.count_by_status(engine) == {"pending": 4}


def test_sqlite_file_is_in_wal_mode(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar()) > 0


def test_migrating_twice_is_a_no_op(engine):
    job_id = insert_sql(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
    tables_before = set(inspect(engine).get_table_names())
    assert current_revision(engine) == head_revision()
    migrate(engine)
    assert current_revision(engine) == head_revision()
    assert set(inspect(engine).get_table_names()) == tables_before
    assert "optimization_jobs" in tables_before
    assert queue.get_job(engine, job_id).status == "pending"


def _psycopg_conninfo(engine: Engine) -> str:
    url = engine.url.render_as_string(hide_password=False)
    return url.replace("postgresql+psycopg://", "postgresql://")


@pytest.mark.postgres
def test_plain_sql_insert_notifies_workers(pg_engine):
    with psycopg.connect(_psycopg_conninfo(pg_engine), autocommit=True) as listener:
        listener.execute("LISTEN optimization_jobs")
        job_id = insert_sql(pg_engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
        received = list(listener.notifies(timeout=5, stop_after=1))
    assert len(received) == 1
    assert received[0].channel == "optimization_jobs"
    assert received[0].payload == str(job_id)


@pytest.mark.postgres
def test_requeue_notifies_workers(pg_engine):
    job_id = insert_sql(pg_engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
    claimed = queue.claim(
        pg_engine, "w1", lease_seconds=60, now=datetime.now(UTC) + timedelta(seconds=2)
    )
    assert claimed is not None
    with psycopg.connect(_psycopg_conninfo(pg_engine), autocommit=True) as listener:
        listener.execute("LISTEN optimization_jobs")
        queue.fail(pg_engine, claimed.lease, "transient", now=datetime.now(UTC), retry_in_seconds=1)
        received = list(listener.notifies(timeout=5, stop_after=1))
    assert [n.payload for n in received] == [str(job_id)]


def _tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def _differences_from_models(engine: Engine) -> list[object]:
    dialect = engine.dialect.name

    def built_here(obj: Any, name: Any, type_: str, reflected: bool, compare_to: Any) -> bool:
        """An index made for the other database only (`ddl_if`) is not expected here."""
        only = getattr(obj, "_ddl_if", None)
        return only is None or only.dialect in (None, dialect)

    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "include_object": built_here}
        )
        return list(compare_metadata(context, Base.metadata))


def _downgrade(engine: Engine, revision: str) -> None:
    cfg = alembic_config()
    with migration_connection(engine) as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def test_migrations_build_the_models_and_round_trip(db_url: str) -> None:
    engine = create_db_engine(db_url)
    try:
        migrate(engine)
        assert current_revision(engine) == head_revision()
        assert _differences_from_models(engine) == []
        assert _tables(engine) == set(Base.metadata.tables)
        _downgrade(engine, "0002")
        assert current_revision(engine) == "0002"
        assert _tables(engine) == set(Base.metadata.tables) - {
            "used_signatures",
            "idempotency_keys",
            "experiment_unit_sums",
            "experiment_stratum_sums",
            "routing_stamp",
            "pattern_unit_hours",
            "pattern_segment_unit_hours",
            "pattern_tag_unit_hours",
            "rollup_marks",
            "ui_sessions",
            "candidate_evaluations",
        }
        _downgrade(engine, "base")
        assert _tables(engine) == set()
        migrate(engine)
        assert current_revision(engine) == head_revision()
        assert _differences_from_models(engine) == []
    finally:
        engine.dispose()


def test_used_signature_is_recorded_once(engine: Engine) -> None:
    row = {"digest": "ab" * 32, "expires_at": datetime.now(UTC)}
    with engine.begin() as conn:
        conn.execute(insert(UsedSignature), [row])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(insert(UsedSignature), [row])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM used_signatures")).scalar_one() == 1


def test_revision_0009_adds_ui_sessions_and_its_downgrade_drops_only_that(engine: Engine) -> None:
    # A job row written before stays through the downgrade and the upgrade again.
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO optimization_jobs (type) VALUES ('pattern_analysis')"))
    before = _tables(engine)
    assert "ui_sessions" in before
    _downgrade(engine, "0008")
    assert _tables(engine) == before - {"ui_sessions", "candidate_evaluations"}
    migrate(engine)
    assert _tables(engine) == before
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM optimization_jobs")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM ui_sessions")).scalar_one() == 0


def test_revision_0010_keeps_one_live_experiment_and_its_downgrade_pauses_awaiting(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO prompts (name) VALUES ('p')"))
        conn.execute(
            text(
                "INSERT INTO ai_prompt_versions (prompt_id, version, content, content_hash) "
                "VALUES ((SELECT id FROM prompts WHERE name = 'p'), 1, 'x', 'h')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO ai_ab_experiments (prompt_id, status) "
                "VALUES ((SELECT id FROM prompts WHERE name = 'p'), 'awaiting_approval')"
            )
        )
    # Awaiting approval is live: a second live experiment of the prompt is refused.
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ai_ab_experiments (prompt_id, status) "
                "VALUES ((SELECT id FROM prompts WHERE name = 'p'), 'running')"
            )
        )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("UPDATE prompts SET promotion_mode = 'sometimes'"))
    _downgrade(engine, "0009")
    with engine.connect() as conn:
        assert conn.execute(text("SELECT status FROM ai_ab_experiments")).scalar_one() == "paused"
    assert "candidate_evaluations" not in _tables(engine)
    migrate(engine)
    assert _differences_from_models(engine) == []
    # Rebuilding prompts and ai_ab_experiments (SQLite's batch mode) deleted no row that
    # refers to them: foreign keys are off while a migration runs.
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ai_prompt_versions")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM ai_ab_experiments")).scalar_one() == 1
