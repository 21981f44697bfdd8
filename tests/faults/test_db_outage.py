"""Database outage: PostgreSQL stopped for about 20 seconds under load, then started again on
the same port and data directory.

Runs on a cluster of its own (the suite's shared server stays up for the other tests).
Three replicas work while a client keeps inserting jobs. During the outage every replica
keeps answering GET /health (200, status "degraded") and GET /ready answers 503; no process
exits. When the database is back the replicas turn healthy and work resumes; every job the
client inserted ends `completed`, recorded exactly once, and nothing is left running.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from optimizer.db import create_db_engine, migrate
from tests.support.pg import PgCluster, PostgresUnavailable, start_cluster
from tests.support.procs import ServiceProcess
from tests.support.replicas import completions, replicas, statuses, wait_until
from tests.support.required import missing_tool

OUTAGE_SECONDS = 20.0
LEASE = 4.0
# /health reads a snapshot refreshed every 5 s and turns degraded on the first failed
# refresh: allow two refreshes and a slow machine.
DEGRADED_WITHIN = 12.0


@pytest.fixture
def own_cluster() -> Iterator[PgCluster]:
    try:
        cluster = start_cluster()
    except PostgresUnavailable as exc:
        reason = f"needs its own PostgreSQL cluster to stop and start ({exc})"
        if os.environ.get("TEST_DATABASE_URL"):  # CI's server is given, none can be started
            pytest.skip(reason)
        missing_tool("REQUIRE_POSTGRES", reason)
    try:
        yield cluster
    finally:
        cluster.destroy()


class Inserter(threading.Thread):
    """Adds one job every 50 ms, as a client would, through the outage too. Each job has a
    unique dedupe key; `confirmed` holds the keys whose INSERT committed."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="inserter")
        self.engine = create_engine(
            url, pool_pre_ping=True, pool_size=1, connect_args={"connect_timeout": 2}
        )
        self.confirmed: list[str] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            key = f"load-{n}"
            try:
                with self.engine.begin() as conn:
                    conn.execute(
                        text(
                            "INSERT INTO optimization_jobs (type, dedupe_key) "
                            "VALUES ('experiment_monitoring', :k)"
                        ),
                        {"k": key},
                    )
                self.confirmed.append(key)
            except SQLAlchemyError:
                self.failures += 1
            self.stop.wait(0.05)
        self.engine.dispose()


def completed_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM optimization_jobs WHERE status = 'completed'")
            ).scalar_one()
        )


def probe(proc: ServiceProcess) -> tuple[int, str, int]:
    """(/health status code, its "status", /ready status code); raises if either does not
    answer within a few seconds."""
    code, body = proc.get_json("/health", timeout=3)
    ready, _ = proc.get_json("/ready", timeout=6)
    return code, body.get("status", "?") if isinstance(body, dict) else "?", ready


@pytest.mark.postgres
def test_replicas_ride_out_a_database_outage_under_load(own_cluster, tmp_path):
    engine = create_db_engine(own_cluster.url)
    migrate(engine)
    inserter = Inserter(own_cluster.url)
    env = {
        "LEASE_SECONDS": str(LEASE),
        "POLL_INTERVAL_SECONDS": "0.5",
        "WORKER_CONCURRENCY": "2",
        "RETRY_BASE_SECONDS": "1",
    }
    try:
        with replicas(own_cluster.url, tmp_path, 3, **env) as procs:
            pids = [p.proc.pid for p in procs]
            inserter.start()
            wait_until(lambda: completed_count(engine) >= 20, 60, "work to flow")
            assert all(probe(p) == (200, "healthy", 200) for p in procs)

            own_cluster.outage_stop()
            stopped = time.monotonic()
            seen: list[tuple[float, int, tuple[int, str, int]]] = []
            while time.monotonic() - stopped < OUTAGE_SECONDS:
                for i, proc in enumerate(procs):
                    assert proc.proc.poll() is None, f"replica {i} exited:\n{proc.logs()}"
                    seen.append((time.monotonic() - stopped, i, probe(proc)))
                time.sleep(0.5)
            confirmed_before_restart = len(inserter.confirmed)
            own_cluster.start()
            restarted = time.monotonic()

            assert all(code == 200 for _, _, (code, _, _) in seen), seen
            assert all(ready == 503 for _, _, (_, _, ready) in seen), seen
            late = [(t, i, status) for t, i, (_, status, _) in seen if t >= DEGRADED_WITHIN]
            assert late and all(status == "degraded" for _, _, status in late), seen
            for i in range(len(procs)):
                assert any(j == i for _, j, _ in late)

            # Back: work resumes within seconds, every replica turns healthy and ready.
            before = completed_count(engine)
            resumed = wait_until(
                lambda: completed_count(engine) > before, 30, "a job to complete after the restart"
            )
            wait_until(
                lambda: all(probe(p) == (200, "healthy", 200) for p in procs),
                30,
                "every replica to be healthy and ready again",
            )
            recovered = time.monotonic() - restarted
            mark = len(inserter.confirmed)
            wait_until(lambda: len(inserter.confirmed) >= mark + 20, 30, "inserts to resume")
            inserter.stop.set()
            inserter.join(10)
            wait_until(
                lambda: statuses(engine)["completed"] >= len(inserter.confirmed),
                90,
                "every inserted job to complete",
            )
            wait_until(
                lambda: statuses(engine).keys() == {"completed"},
                30 + LEASE,
                "nothing pending or running",
            )
            assert [p.proc.pid for p in procs] == pids
            for proc in procs:
                assert proc.terminate() == 0
    finally:
        inserter.stop.set()
        engine.dispose()

    assert inserter.failures > 0, "the client never saw the outage"
    assert len(inserter.confirmed) > confirmed_before_restart
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, dedupe_key, status, locked_by FROM optimization_jobs")
        ).all()
    engine.dispose()
    # Nothing lost: every insert the client saw commit is there (and maybe ones whose
    # commit it could not confirm), and each was completed and recorded exactly once.
    keys = {row.dedupe_key for row in rows}
    assert set(inserter.confirmed) <= keys
    assert all(row.status == "completed" and row.locked_by is None for row in rows)
    done = completions(procs)
    twice = {row.id: done[row.id] for row in rows if done[row.id] != 1}
    assert not twice, f"jobs not recorded exactly once: {twice}"
    # The replicas noticed and said so, and recovered within a bounded time.
    assert all(p.events("health refresh failed; database unreachable") for p in procs)
    assert all(p.events("database reachable again") for p in procs)
    assert recovered < 30
    # Claim retries back off to at most 5 s (DB_RETRY_MAX_SECONDS), then the poll interval.
    assert resumed < 10, f"work resumed {resumed:.1f}s after the database returned"
