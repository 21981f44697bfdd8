"""Real `prompt-worker run` processes: replicas on one PostgreSQL, crashes, SIGTERM, and the
embedded SQLite default end to end."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from optimizer.runtime import queue
from tests.support.procs import ServiceProcess, start_service

TOKEN = "test-admin-token"


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)
    return time.monotonic() - start


@contextmanager
def services(url: str, tmp_path, count: int, **env: str) -> Iterator[list[ServiceProcess]]:
    procs = [start_service(url, tmp_path, **env) for _ in range(count)]
    try:
        for p in procs:
            p.wait_healthy()
        yield procs
    finally:
        for p in procs:
            p.kill()


@contextmanager
def experiments_table_locked(url: str) -> Iterator[Callable[[], None]]:
    """Hold an exclusive lock so experiment_monitoring blocks mid-job: a long job without a
    test-only handler in the product."""
    engine = create_engine(url)
    conn = engine.connect()
    trans = conn.begin()
    conn.execute(text("LOCK TABLE ai_ab_experiments IN ACCESS EXCLUSIVE MODE"))
    released = threading.Event()

    def release() -> None:
        if not released.is_set():
            released.set()
            trans.commit()

    try:
        yield release
    finally:
        release()
        conn.close()
        engine.dispose()


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


def statuses(engine: Engine) -> Counter[str]:
    return Counter(queue.count_by_status(engine))


@pytest.mark.postgres
def test_three_replicas_drain_300_sql_jobs_each_exactly_once(pg_engine, tmp_path):
    with services(
        url_of(pg_engine), tmp_path, 3, WORKER_CONCURRENCY="2", POLL_INTERVAL_SECONDS="1"
    ) as procs:
        with pg_engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO optimization_jobs (type) "
                    "SELECT 'experiment_monitoring' FROM generate_series(1, 300)"
                )
            )
        wait_until(lambda: statuses(pg_engine)["completed"] == 300, 120, "300 completions")
        for p in procs:
            assert p.terminate() == 0
    started = Counter(e["job_id"] for p in procs for e in p.events("job started"))
    finished = Counter(
        e["job_id"] for p in procs for e in p.events("job finished") if e["outcome"] == "completed"
    )
    assert len(started) == 300 and set(started.values()) == {1}
    assert len(finished) == 300 and set(finished.values()) == {1}
    per_replica = [sum(1 for e in p.events("job finished")) for p in procs]
    assert all(n > 0 for n in per_replica), per_replica
    with pg_engine.connect() as conn:
        assert conn.execute(text("SELECT max(attempts) FROM optimization_jobs")).scalar() == 1


@pytest.mark.postgres
def test_sql_insert_wakes_worker_through_notify(pg_engine, tmp_path):
    # With a 60 s poll interval only LISTEN/NOTIFY can start the job quickly.
    with services(url_of(pg_engine), tmp_path, 1, POLL_INTERVAL_SECONDS="60") as procs:
        wait_until(lambda: bool(procs[0].events("listening for new jobs")), 10, "LISTEN")
        time.sleep(0.5)  # let the catch-up claim after LISTEN go back to waiting
        with pg_engine.begin() as conn:
            conn.execute(
                text("INSERT INTO optimization_jobs (type) VALUES ('experiment_monitoring')")
            )
        took = wait_until(lambda: statuses(pg_engine)["completed"] == 1, 10, "completion")
        assert took < 5
        assert procs[0].terminate() == 0


@pytest.mark.postgres
def test_sigkill_mid_job_is_finished_by_another_replica(pg_engine, tmp_path):
    url = url_of(pg_engine)
    env = {"LEASE_SECONDS": "2", "POLL_INTERVAL_SECONDS": "0.2"}
    with experiments_table_locked(url) as release, services(url, tmp_path, 1, **env) as (a,):
        with pg_engine.begin() as conn:
            job_id = conn.execute(
                text(
                    "INSERT INTO optimization_jobs (type) "
                    "VALUES ('experiment_monitoring') RETURNING id"
                )
            ).scalar()
        wait_until(lambda: queue.get_job(pg_engine, job_id).status == "running", 10, "claim")
        assert f":{a.proc.pid}:" in (queue.get_job(pg_engine, job_id).locked_by or "")
        a.kill()
        with services(url, tmp_path, 1, **env) as (b,):
            release()
            wait_until(
                lambda: queue.get_job(pg_engine, job_id).status == "completed",
                30,
                "completion by the second replica",
            )
            assert b.terminate() == 0
    job = queue.get_job(pg_engine, job_id)
    assert job.attempts == 2
    assert [e["job_id"] for e in b.events("job finished")] == [str(job_id)]
    assert statuses(pg_engine)["running"] == 0


@pytest.mark.postgres
def test_sigterm_mid_job_releases_it_and_exits_zero(pg_engine, tmp_path):
    url = url_of(pg_engine)
    with (
        experiments_table_locked(url),
        services(url, tmp_path, 1, SHUTDOWN_GRACE_SECONDS="1") as (a,),
    ):
        with pg_engine.begin() as conn:
            job_id = conn.execute(
                text(
                    "INSERT INTO optimization_jobs (type) "
                    "VALUES ('experiment_monitoring') RETURNING id"
                )
            ).scalar()
        wait_until(lambda: queue.get_job(pg_engine, job_id).status == "running", 10, "claim")
        assert a.terminate(timeout=30) == 0
    job = queue.get_job(pg_engine, job_id)
    assert (job.status, job.attempts, job.locked_by) == ("pending", 0, None)


@pytest.mark.postgres
def test_sigterm_lets_job_finish_within_grace(pg_engine, tmp_path):
    url = url_of(pg_engine)
    with (
        experiments_table_locked(url) as release,
        services(url, tmp_path, 1, SHUTDOWN_GRACE_SECONDS="20") as (a,),
    ):
        with pg_engine.begin() as conn:
            job_id = conn.execute(
                text(
                    "INSERT INTO optimization_jobs (type) "
                    "VALUES ('experiment_monitoring') RETURNING id"
                )
            ).scalar()
        wait_until(lambda: queue.get_job(pg_engine, job_id).status == "running", 10, "claim")
        a.proc.send_signal(15)
        time.sleep(0.5)
        release()
        assert a.proc.wait(timeout=30) == 0
    assert queue.get_job(pg_engine, job_id).status == "completed"


def test_sqlite_service_end_to_end(sqlite_engine, tmp_path):
    url = url_of(sqlite_engine)
    with services(url, tmp_path, 1, ADMIN_TOKEN=TOKEN, POLL_INTERVAL_SECONDS="0.2") as (svc,):
        status, health = svc.get_json("/health")
        assert status == 200
        assert set(health) >= {"status", "uptime", "stats", "timestamp"}
        assert set(health["stats"]) == {
            "jobsCompleted",
            "jobsFailed",
            "patternsAnalyzed",
            "variantsGenerated",
            "experimentsCreated",
            "experimentsCompleted",
        }
        assert svc.get_json("/ready")[0] == 200
        code, job = svc.request("POST", "/jobs", {"type": "experiment_monitoring"}, TOKEN)
        assert code == 201
        wait_until(
            lambda: queue.get_job(sqlite_engine, job["id"]).status == "completed", 10, "HTTP job"
        )
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as raw:  # a plain SQL insert, as an admin would
            raw.execute("INSERT INTO optimization_jobs (type) VALUES ('experiment_monitoring')")
        wait_until(lambda: statuses(sqlite_engine)["completed"] == 2, 10, "SQL job")
        wait_until(lambda: svc.get_json("/health")[1]["stats"]["jobsCompleted"] == 2, 10, "stats")
        assert svc.terminate() == 0
    assert "Traceback" not in svc.logs()


def test_service_refuses_unmigrated_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    svc = start_service(url, tmp_path)
    assert svc.proc.wait(timeout=30) == 1
    assert "run `prompt-worker migrate` first" in svc.logs()
    assert "Traceback" not in svc.logs()


def test_port_in_use_is_one_clear_error(sqlite_engine, tmp_path):
    url = url_of(sqlite_engine)
    with services(url, tmp_path, 1) as (first,):
        second = start_service(url, tmp_path, PORT=str(first.port))
        assert second.proc.wait(timeout=30) == 1
        assert f"cannot listen on 127.0.0.1:{first.port}" in second.logs()
        assert "Traceback" not in second.logs()


@pytest.fixture(autouse=True)
def _no_stray_tokens(monkeypatch):
    monkeypatch.delenv("ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("INGEST_TOKEN", raising=False)
    os.environ.pop("DATABASE_URL", None)
