"""Replicas: three `prompt-worker run` processes on one PostgreSQL database.

- Every cron tick gives exactly one job: with both crons at every minute (the finest a
  5-field cron allows), all three schedulers fire each tick, one insert wins the unique
  dedupe key (type, scope, scheduled fire time) and the other two find it taken.
- 300 jobs inserted by one plain SQL statement complete exactly once each, with one
  attempt, and the work spreads over the three replicas.

The queue clears `locked_by` when a job ends, so who ran a job comes from each replica's
own log file ("job started" / "job finished" lines carry the job id).
"""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import text

from tests.support.procs import ServiceProcess
from tests.support.replicas import completions, replicas, url_of, wait_until

BULK = 300
TICK_TYPES = ("experiment_monitoring", "pattern_analysis")
TICK_EVENTS = ("tick enqueued", "tick already enqueued by another replica")


def tick_keys(proc: ServiceProcess, job_type: str) -> dict[str, str]:
    """dedupe key -> the event this replica logged for it."""
    return {
        e["dedupe_key"]: e["msg"]
        for name in TICK_EVENTS
        for e in proc.events(name)
        if e.get("job_type") == job_type
    }


def ticks_seen_by_all(procs: list[ServiceProcess], job_type: str) -> set[str]:
    seen = [set(tick_keys(p, job_type)) for p in procs]
    return set.intersection(*seen)


def bulk_ids(engine) -> list[int]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT id FROM optimization_jobs WHERE dedupe_key LIKE 'bulk-%' ORDER BY id")
            ).scalars()
        )


def unfinished(engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM optimization_jobs WHERE status IN ('pending', 'running')"
                )
            ).scalar_one()
        )


@pytest.mark.postgres
def test_three_replicas_one_job_per_tick_and_sql_jobs_run_exactly_once(pg_engine, tmp_path):
    env = {
        "MONITORING_CRON": "* * * * *",
        "PATTERN_ANALYSIS_CRON": "* * * * *",
        "WORKER_CONCURRENCY": "2",
        "POLL_INTERVAL_SECONDS": "1",
        "LEASE_SECONDS": "30",
    }
    with replicas(url_of(pg_engine), tmp_path, 3, **env) as procs:
        with pg_engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO optimization_jobs (type, dedupe_key) SELECT "
                    f"'experiment_monitoring', 'bulk-' || n FROM generate_series(1, {BULK}) n"
                )
            )
        ids = bulk_ids(pg_engine)
        assert len(ids) == BULK

        def bulk_done() -> bool:
            with pg_engine.connect() as conn:
                return (
                    conn.execute(
                        text(
                            "SELECT count(*) FROM optimization_jobs WHERE dedupe_key LIKE 'bulk-%' "
                            "AND status = 'completed'"
                        )
                    ).scalar_one()
                    == BULK
                )

        wait_until(bulk_done, 180, f"{BULK} SQL jobs to complete")
        # A tick that fired while all three schedulers ran (at most a minute or two away).
        wait_until(
            lambda: all(ticks_seen_by_all(procs, t) for t in TICK_TYPES),
            150,
            "a cron tick seen by all three replicas",
        )
        wait_until(lambda: unfinished(pg_engine) == 0, 60, "the tick jobs to finish")
        for proc in procs:
            assert proc.terminate() == 0

    # ---- exactly one job per tick ----
    with pg_engine.connect() as conn:
        tick_jobs = conn.execute(
            text(
                "SELECT type, dedupe_key, status, attempts FROM optimization_jobs "
                "WHERE dedupe_key IS NULL OR dedupe_key NOT LIKE 'bulk-%'"
            )
        ).all()
    by_key = Counter(row.dedupe_key for row in tick_jobs)
    assert None not in by_key and set(by_key.values()) == {1}, by_key
    assert all((row.status, row.attempts) == ("completed", 1) for row in tick_jobs), tick_jobs
    for job_type in TICK_TYPES:
        keys = ticks_seen_by_all(procs, job_type)
        assert keys, f"no {job_type} tick reached all three replicas"
        for key in keys:
            assert key.startswith(f"{job_type}:all:") and key.endswith(":00Z"), key
            said = [tick_keys(p, job_type)[key] for p in procs]
            assert sorted(said) == sorted([TICK_EVENTS[0], TICK_EVENTS[1], TICK_EVENTS[1]]), (
                key,
                said,
            )
            assert by_key[key] == 1
        # Ticks seen by fewer replicas (one that fired while a replica was still starting)
        # made one job each too; every key any replica logged is in the table.
        logged = set().union(*(tick_keys(p, job_type) for p in procs))
        assert logged == {k for k in by_key if k.startswith(job_type + ":")}

    # ---- 300 SQL jobs, each completed exactly once ----
    with pg_engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, attempts, locked_by, lease_expires_at, finished_at "
                "FROM optimization_jobs WHERE dedupe_key LIKE 'bulk-%'"
            )
        ).all()
    assert all(
        r.status == "completed"
        and r.attempts == 1
        and r.locked_by is None
        and r.lease_expires_at is None
        and r.finished_at is not None
        for r in rows
    )
    done = completions(procs)
    assert all(done[i] == 1 for i in ids), {i: done[i] for i in ids if done[i] != 1}
    started = Counter(int(e["job_id"]) for p in procs for e in p.events("job started"))
    assert all(started[i] == 1 for i in ids)
    per_replica = [
        sum(1 for e in p.events("job finished") if int(e["job_id"]) in set(ids)) for p in procs
    ]
    assert sum(per_replica) == BULK
    assert all(n >= 10 for n in per_replica), f"work did not spread: {per_replica}"
    assert not any("Traceback" in p.logs() for p in procs)
