"""The durable job queue on real SQLite and PostgreSQL, with time controlled by `now`."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import Engine

from models.jobs import OptimizationJob
from optimizer.db import create_db_engine
from optimizer.errors import Conflict, NotFound
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob, SqlQueue
from tests.support.memory_queue import MemoryQueue

T0 = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
LEASE = 60.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def add(
    engine: Engine,
    *,
    job_type: str = "full_cycle",
    priority: int = 0,
    created: datetime = T0,
    run_at: datetime | None = None,
    max_attempts: int = 3,
    dedupe_key: str | None = None,
    payload: dict | None = None,
) -> queue.Job:
    job, created_new = queue.enqueue(
        engine,
        NewJob(type=job_type, payload=payload or {}, priority=priority, run_at=run_at),
        max_attempts=max_attempts,
        now=created,
        dedupe_key=dedupe_key,
    )
    assert created_new
    return job


def row_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(OptimizationJob)).scalar_one())


def claim(engine: Engine, worker: str = "w1", now: datetime = T0) -> queue.Job:
    job = queue.claim(engine, worker, lease_seconds=LEASE, now=now)
    assert job is not None, "expected a job to be claimable"
    return job


# --- enqueue and claim -----------------------------------------------------------------


def test_enqueue_stores_what_was_asked(engine):
    job = add(
        engine,
        job_type="pattern_analysis",
        priority=7,
        payload={"prompt": "support"},
        max_attempts=5,
    )
    stored = queue.get_job(engine, job.id)
    assert stored.type == "pattern_analysis"
    assert stored.status == "pending"
    assert stored.priority == 7
    assert json.loads(stored.payload) == {"prompt": "support"}
    assert stored.max_attempts == 5
    assert stored.attempts == 0
    assert stored.run_after == T0
    assert stored.created_at == T0
    assert stored.locked_by is None


def test_claim_empty_queue_returns_none(engine):
    assert queue.claim(engine, "w1", lease_seconds=LEASE, now=T0) is None


def test_claim_takes_highest_priority_then_oldest(engine):
    old_low = add(engine, priority=0, created=at(0))
    new_high = add(engine, priority=10, created=at(20))
    old_high = add(engine, priority=10, created=at(10))
    negative = add(engine, priority=-5, created=at(-100))
    now = at(60)
    order = [claim(engine, now=now).id for _ in range(4)]
    assert order == [old_high.id, new_high.id, old_low.id, negative.id]
    assert queue.claim(engine, "w1", lease_seconds=LEASE, now=now) is None


def test_claim_sets_lease_and_attempt(engine):
    job = add(engine)
    claimed = claim(engine, "worker-a", now=at(5))
    assert claimed.id == job.id
    assert claimed.status == "running"
    assert claimed.locked_by == "worker-a"
    assert claimed.attempts == 1
    assert claimed.started_at == at(5)
    assert claimed.lease_expires_at == at(5 + LEASE)
    assert claimed.lease == queue.Lease(job.id, "worker-a", 1)


def test_future_run_after_is_not_claimed_until_due(engine):
    later = add(engine, priority=100, run_at=at(300))
    now_job = add(engine, priority=0)
    assert claim(engine, now=at(1)).id == now_job.id
    assert queue.claim(engine, "w1", lease_seconds=LEASE, now=at(299)) is None
    assert claim(engine, now=at(300)).id == later.id


def test_dedupe_key_second_enqueue_returns_existing(engine):
    first, created1 = queue.enqueue(
        engine,
        NewJob(type="experiment_monitoring"),
        max_attempts=3,
        now=T0,
        dedupe_key="monitor:all:T0",
    )
    second, created2 = queue.enqueue(
        engine,
        NewJob(type="experiment_monitoring", priority=9),
        max_attempts=3,
        now=at(1),
        dedupe_key="monitor:all:T0",
    )
    assert created1 is True
    assert created2 is False
    assert second.id == first.id
    assert second.priority == 0  # the first job is kept as it was
    assert row_count(engine) == 1
    third, created3 = queue.enqueue(
        engine,
        NewJob(type="experiment_monitoring"),
        max_attempts=3,
        now=at(2),
        dedupe_key="monitor:all:T1",
    )
    assert created3 is True and third.id != first.id
    assert row_count(engine) == 2


def test_jobs_without_dedupe_key_never_collide(engine):
    add(engine)
    add(engine)
    assert row_count(engine) == 2


# --- fencing ---------------------------------------------------------------------------


def test_worker_whose_lease_was_taken_over_cannot_write(engine):
    job = add(engine)
    a = claim(engine, "worker-a", now=at(0))
    assert queue.reap_expired(engine, now=at(LEASE - 1)) == queue.ReapResult(0, 0, 0)
    reaped = queue.reap_expired(engine, now=at(LEASE + 1))
    assert reaped == queue.ReapResult(requeued=1, failed=0, cancelled=0)
    requeued = queue.get_job(engine, job.id)
    assert requeued.status == "pending" and requeued.locked_by is None

    b = claim(engine, "worker-b", now=at(LEASE + 2))
    assert b.id == job.id
    assert b.attempts == 2

    assert queue.complete(engine, a.lease, {"by": "a"}, now=at(70)) is False
    assert queue.fail(engine, a.lease, "a failed", now=at(70), retry_in_seconds=None) is False
    assert queue.fail(engine, a.lease, "a failed", now=at(70), retry_in_seconds=5) is False
    assert queue.report_progress(engine, a.lease, 50, "a step") is False
    assert queue.mark_cancelled(engine, a.lease, now=at(70)) is False
    assert queue.release(engine, a.lease, now=at(70)) is False
    hb = queue.heartbeat(engine, a.lease, lease_seconds=LEASE, now=at(70))
    assert hb == queue.HeartbeatResult(held=False, cancel_requested=False)

    mid = queue.get_job(engine, job.id)
    assert mid.status == "running" and mid.locked_by == "worker-b" and mid.attempts == 2
    assert mid.progress == 0 and mid.current_step is None

    assert queue.heartbeat(engine, b.lease, lease_seconds=LEASE, now=at(80)).held is True
    assert queue.complete(engine, b.lease, {"by": "b"}, now=at(90)) is True
    final = queue.get_job(engine, job.id)
    assert final.status == "completed"
    assert json.loads(final.result or "") == {"by": "b"}
    assert final.finished_at == at(90)
    assert final.progress == 100
    assert final.error is None
    assert final.locked_by is None and final.lease_expires_at is None
    # Finished: even the owner cannot write again.
    assert queue.complete(engine, b.lease, {"by": "b again"}, now=at(91)) is False
    assert queue.fail(engine, b.lease, "late", now=at(91), retry_in_seconds=None) is False


def test_same_worker_name_with_old_attempt_is_fenced(engine):
    add(engine)
    first = claim(engine, "same-worker", now=at(0))
    queue.reap_expired(engine, now=at(LEASE + 1))
    second = claim(engine, "same-worker", now=at(LEASE + 2))
    assert queue.complete(engine, first.lease, {"stale": True}, now=at(70)) is False
    assert queue.get_job(engine, second.id).status == "running"


def test_heartbeat_extends_lease_so_reaper_leaves_job(engine):
    add(engine)
    job = claim(engine, now=at(0))
    hb = queue.heartbeat(engine, job.lease, lease_seconds=LEASE, now=at(50))
    assert hb == queue.HeartbeatResult(held=True, cancel_requested=False)
    assert queue.get_job(engine, job.id).lease_expires_at == at(50 + LEASE)
    assert queue.reap_expired(engine, now=at(LEASE + 1)) == queue.ReapResult(0, 0, 0)
    assert queue.get_job(engine, job.id).status == "running"


# --- fail and retry --------------------------------------------------------------------


def test_fail_with_retry_returns_to_pending_later(engine):
    add(engine)
    job = claim(engine, now=at(0))
    assert queue.fail(engine, job.lease, "upstream 529", now=at(10), retry_in_seconds=30)
    stored = queue.get_job(engine, job.id)
    assert stored.status == "pending"
    assert stored.run_after == at(40)
    assert stored.error == "upstream 529"
    assert stored.attempts == 1
    assert stored.finished_at is None
    assert stored.locked_by is None and stored.lease_expires_at is None
    assert queue.claim(engine, "w1", lease_seconds=LEASE, now=at(39)) is None
    again = claim(engine, now=at(40))
    assert again.id == job.id and again.attempts == 2


def test_fail_without_retry_is_final(engine):
    add(engine)
    job = claim(engine, now=at(0))
    assert queue.fail(engine, job.lease, "bad payload", now=at(10), retry_in_seconds=None)
    stored = queue.get_job(engine, job.id)
    assert stored.status == "failed"
    assert stored.error == "bad payload"
    assert stored.finished_at == at(10)
    assert stored.locked_by is None
    assert queue.claim(engine, "w1", lease_seconds=LEASE, now=at(10_000)) is None


def test_fail_truncates_long_error(engine):
    add(engine)
    job = claim(engine, now=at(0))
    queue.fail(engine, job.lease, "x" * 10_000, now=at(1), retry_in_seconds=None)
    assert len(queue.get_job(engine, job.id).error or "") == queue.MAX_ERROR_CHARS


def test_retry_until_failed_over_max_attempts(engine):
    job = add(engine, max_attempts=3)
    now = at(0)
    for attempt in (1, 2, 3):
        claimed = claim(engine, now=now)
        assert claimed.id == job.id
        assert claimed.attempts == attempt
        final = claimed.attempts >= claimed.max_attempts
        assert queue.fail(
            engine, claimed.lease, f"boom {attempt}", now=now, retry_in_seconds=None if final else 5
        )
        stored = queue.get_job(engine, job.id)
        assert stored.status == ("failed" if final else "pending")
        assert stored.error == f"boom {attempt}"
        now += timedelta(seconds=5)
    stored = queue.get_job(engine, job.id)
    assert stored.status == "failed" and stored.attempts == 3
    assert queue.claim(engine, "w1", lease_seconds=LEASE, now=at(10_000)) is None


# --- reaper ----------------------------------------------------------------------------


def test_reaper_fails_job_whose_attempts_are_spent(engine):
    job = add(engine, max_attempts=1)
    claim(engine, now=at(0))
    result = queue.reap_expired(engine, now=at(LEASE + 1))
    assert result == queue.ReapResult(requeued=0, failed=1, cancelled=0)
    stored = queue.get_job(engine, job.id)
    assert stored.status == "failed"
    assert stored.finished_at == at(LEASE + 1)
    assert stored.locked_by is None
    assert "lease expired" in (stored.error or "")


def test_reaper_cancels_expired_job_with_cancel_requested(engine):
    job = add(engine, max_attempts=1)  # spent attempts too: cancel wins over fail
    claim(engine, now=at(0))
    queue.cancel(engine, job.id, now=at(10))
    result = queue.reap_expired(engine, now=at(LEASE + 1))
    assert result == queue.ReapResult(requeued=0, failed=0, cancelled=1)
    stored = queue.get_job(engine, job.id)
    assert stored.status == "cancelled"
    assert stored.finished_at == at(LEASE + 1)
    assert stored.locked_by is None


def test_reaper_handles_a_mix(engine):
    requeue = add(engine, created=at(0), max_attempts=3)
    spent = add(engine, created=at(1), max_attempts=1)
    cancelled = add(engine, created=at(2), max_attempts=3)
    alive = add(engine, created=at(3), max_attempts=3)
    for _ in range(3):
        claim(engine, now=at(10))
    queue.cancel(engine, cancelled.id, now=at(11))
    claim(engine, now=at(50))  # `alive`: its lease runs until 110
    result = queue.reap_expired(engine, now=at(10 + LEASE + 1))
    assert result == queue.ReapResult(requeued=1, failed=1, cancelled=1)
    assert queue.get_job(engine, requeue.id).status == "pending"
    assert queue.get_job(engine, spent.id).status == "failed"
    assert queue.get_job(engine, cancelled.id).status == "cancelled"
    assert queue.get_job(engine, alive.id).status == "running"


# --- cancel ----------------------------------------------------------------------------


def test_cancel_pending_job(engine):
    job = add(engine)
    cancelled = queue.cancel(engine, job.id, now=at(5))
    assert cancelled.status == "cancelled"
    assert cancelled.finished_at == at(5)
    assert queue.get_job(engine, job.id).status == "cancelled"
    assert queue.claim(engine, "w1", lease_seconds=LEASE, now=at(10)) is None


def test_cancel_running_job_asks_worker_to_stop(engine):
    add(engine)
    job = claim(engine, now=at(0))
    before = queue.heartbeat(engine, job.lease, lease_seconds=LEASE, now=at(1))
    assert before == queue.HeartbeatResult(held=True, cancel_requested=False)
    answer = queue.cancel(engine, job.id, now=at(5))
    assert answer.status == "running"
    assert answer.cancel_requested is True
    hb = queue.heartbeat(engine, job.lease, lease_seconds=LEASE, now=at(6))
    assert hb == queue.HeartbeatResult(held=True, cancel_requested=True)
    assert queue.mark_cancelled(engine, job.lease, now=at(7)) is True
    stored = queue.get_job(engine, job.id)
    assert stored.status == "cancelled" and stored.finished_at == at(7)
    assert stored.locked_by is None


@pytest.mark.parametrize("outcome", ["completed", "failed", "cancelled"])
def test_cancel_finished_job_conflicts(engine, outcome):
    job = add(engine)
    if outcome == "cancelled":
        queue.cancel(engine, job.id, now=at(1))
    else:
        claimed = claim(engine, now=at(0))
        if outcome == "completed":
            queue.complete(engine, claimed.lease, {}, now=at(1))
        else:
            queue.fail(engine, claimed.lease, "x", now=at(1), retry_in_seconds=None)
    with pytest.raises(Conflict, match=outcome):
        queue.cancel(engine, job.id, now=at(2))
    assert queue.get_job(engine, job.id).status == outcome


def test_unknown_job_is_not_found(engine):
    with pytest.raises(NotFound):
        queue.cancel(engine, 987654, now=T0)
    with pytest.raises(NotFound):
        queue.get_job(engine, 987654)
    with pytest.raises(NotFound):
        queue.retry(engine, 987654, now=T0)


# --- retry and release -----------------------------------------------------------------


def test_retry_of_failed_job_starts_fresh(engine):
    job = add(engine, max_attempts=2)
    for _ in range(2):
        claimed = claim(engine, now=at(0))
        queue.fail(
            engine,
            claimed.lease,
            "boom",
            now=at(0),
            retry_in_seconds=0 if claimed.attempts < 2 else None,
        )
    assert queue.get_job(engine, job.id).status == "failed"
    retried = queue.retry(engine, job.id, now=at(100))
    assert retried.status == "pending"
    assert retried.attempts == 0
    assert retried.run_after == at(100)
    assert retried.finished_at is None and retried.started_at is None
    again = claim(engine, now=at(100))
    assert again.id == job.id and again.attempts == 1


def test_retry_of_cancelled_job(engine):
    job = add(engine)
    queue.cancel(engine, job.id, now=at(1))
    assert queue.retry(engine, job.id, now=at(2)).status == "pending"


@pytest.mark.parametrize("state", ["pending", "running", "completed"])
def test_retry_of_unfinished_or_completed_job_conflicts(engine, state):
    job = add(engine)
    if state != "pending":
        claimed = claim(engine, now=at(0))
        if state == "completed":
            queue.complete(engine, claimed.lease, {"ok": True}, now=at(1))
    with pytest.raises(Conflict, match=state):
        queue.retry(engine, job.id, now=at(2))
    assert queue.get_job(engine, job.id).status == state


def test_release_returns_job_without_spending_an_attempt(engine):
    job = add(engine)
    first = claim(engine, now=at(0))
    queue.report_progress(engine, first.lease, 40, "halfway")
    assert queue.release(engine, first.lease, now=at(10)) is True
    stored = queue.get_job(engine, job.id)
    assert stored.status == "pending"
    assert stored.attempts == 0
    assert stored.run_after == at(10)
    assert stored.locked_by is None and stored.lease_expires_at is None
    assert stored.current_step is None
    again = claim(engine, now=at(10))
    assert again.attempts == 1


# --- housekeeping ----------------------------------------------------------------------


def test_prune_finished_deletes_only_old_finished_jobs(engine):
    # Distinct priorities fix the claim order.
    old_done = add(engine, priority=50)
    old_failed = add(engine, priority=40)
    old_cancelled = add(engine, priority=0)
    recent_done = add(engine, priority=30)
    running = add(engine, priority=20)
    pending = add(engine, priority=10, run_at=at(10_000))
    queue.cancel(engine, old_cancelled.id, now=at(0))
    c = claim(engine, now=at(0))
    assert c.id == old_done.id
    queue.complete(engine, c.lease, {}, now=at(0))
    c = claim(engine, now=at(0))
    assert c.id == old_failed.id
    queue.fail(engine, c.lease, "x", now=at(0), retry_in_seconds=None)
    c = claim(engine, now=at(0))
    assert c.id == recent_done.id
    queue.complete(engine, c.lease, {}, now=at(5000))
    assert claim(engine, now=at(0)).id == running.id

    deleted = queue.prune_finished(engine, older_than=at(1000))
    assert deleted == 3
    remaining = {j.id: j.status for j in queue.list_jobs(engine)}
    assert remaining == {recent_done.id: "completed", running.id: "running", pending.id: "pending"}
    assert queue.prune_finished(engine, older_than=at(1000)) == 0
    # A job finished exactly at the cutoff is not older than it.
    assert queue.prune_finished(engine, older_than=at(5000)) == 0
    assert queue.prune_finished(engine, older_than=at(5001)) == 1


def test_count_by_status(engine):
    jobs = [add(engine, created=at(i)) for i in range(5)]
    assert queue.count_by_status(engine) == {"pending": 5}
    first = claim(engine, now=at(10))
    second = claim(engine, now=at(10))
    claim(engine, now=at(10))
    queue.complete(engine, first.lease, {}, now=at(11))
    queue.fail(engine, second.lease, "x", now=at(11), retry_in_seconds=None)
    queue.cancel(engine, jobs[4].id, now=at(11))
    assert queue.count_by_status(engine) == {
        "pending": 1,
        "running": 1,
        "completed": 1,
        "failed": 1,
        "cancelled": 1,
    }


def test_list_jobs_filters_and_orders_newest_first(engine):
    a = add(engine, job_type="pattern_analysis")
    b = add(engine, job_type="full_cycle")
    c = add(engine, job_type="pattern_analysis")
    queue.cancel(engine, c.id, now=at(1))
    assert [j.id for j in queue.list_jobs(engine)] == [c.id, b.id, a.id]
    assert [j.id for j in queue.list_jobs(engine, job_type="pattern_analysis")] == [c.id, a.id]
    assert [j.id for j in queue.list_jobs(engine, status="pending")] == [b.id, a.id]
    assert [j.id for j in queue.list_jobs(engine, limit=1)] == [c.id]


@pytest.mark.parametrize(("given", "stored"), [(-20, 0), (0, 0), (55, 55), (100, 100), (250, 100)])
def test_report_progress_clamps(engine, given, stored):
    add(engine)
    job = claim(engine, now=at(0))
    assert queue.report_progress(engine, job.lease, given, "analysing") is True
    got = queue.get_job(engine, job.id)
    assert got.progress == stored
    assert got.current_step == "analysing"


def test_report_progress_truncates_step(engine):
    add(engine)
    job = claim(engine, now=at(0))
    assert queue.report_progress(engine, job.lease, 10, "s" * 1000)
    assert queue.get_job(engine, job.id).current_step == "s" * 255


def test_job_to_dict_decodes_json_and_formats_times(engine):
    job = add(engine, payload={"prompt": "x"})
    out = queue.get_job(engine, job.id).to_dict()
    assert out["payload"] == {"prompt": "x"}
    assert out["created_at"] == "2026-11-22T09:00:00Z"
    assert out["result"] is None


@pytest.mark.parametrize("raw", ["[" * 100_000 + "]" * 100_000, "1" * 5_000])
def test_job_to_dict_keeps_unreadable_json_as_text(engine, raw):
    job = add(engine)
    with engine.begin() as conn:
        conn.execute(
            update(OptimizationJob).where(OptimizationJob.id == job.id).values(payload=raw)
        )
    assert queue.get_job(engine, job.id).to_dict()["payload"] == raw


# --- concurrency -----------------------------------------------------------------------


def _claim_all_concurrently(engines: list[Engine], n_jobs: int) -> list[list[int]]:
    claimed: list[list[int]] = [[] for _ in engines]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def run(i: int) -> None:
        try:
            start.wait()
            while True:
                job = queue.claim(engines[i], f"worker-{i}", lease_seconds=LEASE, now=at(10))
                if job is None:
                    return
                claimed[i].append(job.id)
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "claimers did not finish"
    assert not errors, errors
    return claimed


def _assert_each_claimed_once(engine: Engine, ids: set[int], claimed: list[list[int]]) -> None:
    flat = [job_id for per_thread in claimed for job_id in per_thread]
    assert len(flat) == len(set(flat)), "a job was claimed twice"
    assert set(flat) == ids
    assert queue.count_by_status(engine) == {"running": len(ids)}
    by_worker = {j.id: j.locked_by for j in queue.list_jobs(engine, limit=len(ids) + 1)}
    for i, per_thread in enumerate(claimed):
        assert all(by_worker[job_id] == f"worker-{i}" for job_id in per_thread)


@pytest.mark.postgres
def test_concurrent_claims_on_postgres_take_each_job_once(pg_engine):
    ids = {add(pg_engine, created=at(i % 7)).id for i in range(200)}
    claimed = _claim_all_concurrently([pg_engine] * 4, 200)
    _assert_each_claimed_once(pg_engine, ids, claimed)


def test_concurrent_claims_on_sqlite_take_each_job_once(sqlite_engine, sqlite_url):
    ids = {add(sqlite_engine, created=at(i % 7)).id for i in range(200)}
    engines = [create_db_engine(sqlite_url) for _ in range(4)]
    try:
        claimed = _claim_all_concurrently(engines, 200)
    finally:
        for e in engines:
            e.dispose()
    _assert_each_claimed_once(sqlite_engine, ids, claimed)


# --- the in-memory fake keeps these rules ----------------------------------------------------


class _Side:
    """One queue driven by an operation sequence. Jobs and leases are named by the order in
    which they appeared, because the two queues number jobs differently (a PostgreSQL
    sequence also moves on an insert that a dedupe key turned away)."""

    def __init__(self, q: SqlQueue | MemoryQueue, rows: Callable[[], list[queue.Job]]) -> None:
        self.q = q
        self.rows = rows
        self.ids: list[int] = []
        self.leases: list[queue.Lease] = []

    def index(self, job: queue.Job | None) -> int | None:
        if job is None:
            return None
        if job.id not in self.ids:
            self.ids.append(job.id)
        return self.ids.index(job.id)

    def snapshot(self) -> list[queue.Job]:
        return sorted(
            (dataclasses.replace(j, id=self.ids.index(j.id)) for j in self.rows()),
            key=lambda j: j.id,
        )

    def apply(self, op: tuple[Any, ...], now: datetime) -> Any:
        name, *args = op
        q = self.q
        if name == "enqueue":
            priority, run_in, max_attempts, key = args
            run_at = None if run_in is None else now + timedelta(seconds=run_in)
            job, created = q.enqueue(
                NewJob(type="full_cycle", priority=priority, run_at=run_at),
                max_attempts=max_attempts,
                now=now,
                dedupe_key=key,
            )
            return self.index(job), created
        if name == "claim":
            job = q.claim(args[0], lease_seconds=LEASE, now=now)
            if job is not None:
                self.leases.append(job.lease)
            return self.index(job)
        if name == "reap":
            return q.reap_expired(now=now)
        if name in ("cancel", "retry"):
            return self._admin(name, args[0], now)
        return self._with_lease(name, args, now)

    def _admin(self, name: str, pick: int, now: datetime) -> Any:
        if not self.ids:
            return "no job"
        job_id = self.ids[pick % len(self.ids)]
        try:
            return self.index(getattr(self.q, name)(job_id, now=now))
        except (Conflict, NotFound) as exc:
            return type(exc).__name__, str(exc).replace(str(job_id), "#")

    def _with_lease(self, name: str, args: list[Any], now: datetime) -> Any:
        if not self.leases:
            return "no lease"
        lease, q = self.leases[args[0] % len(self.leases)], self.q
        calls: dict[str, Callable[..., Any]] = {
            "heartbeat": lambda: q.heartbeat(lease, lease_seconds=LEASE, now=now),
            "progress": lambda percent, step: q.report_progress(lease, percent, step),
            "complete": lambda result: q.complete(lease, result, now=now),
            "fail": lambda error, delay: q.fail(lease, error, now=now, retry_in_seconds=delay),
            "defer": lambda wait: q.defer(
                lease, "limit used up", until=now + timedelta(seconds=wait)
            ),
            "release": lambda: q.release(lease, now=now),
            "mark_cancelled": lambda: q.mark_cancelled(lease, now=now),
        }
        return calls[name](*args[1:])


def _run_on_both(engine: Engine, operations: list[tuple[Any, ...]]) -> None:
    """Apply `operations` to the SQL queue and to the fake from an empty table; after each,
    both must answer alike and hold the same jobs."""
    with engine.begin() as conn:
        conn.execute(delete(OptimizationJob))
    fake = MemoryQueue()
    sql = _Side(SqlQueue(engine), lambda: queue.list_jobs(engine, limit=1000))
    memory = _Side(fake, lambda: list(fake.jobs.values()))
    now = T0
    for step, op in enumerate(operations):
        if op[0] == "advance":
            now += timedelta(seconds=op[1])
            continue
        expected = sql.apply(op, now)
        assert memory.apply(op, now) == expected, (step, op)
        assert memory.snapshot() == sql.snapshot(), (step, op)


# Every rule at least once; leases are numbered in the order they were claimed.
_SCRIPT: list[tuple[Any, ...]] = [
    ("enqueue", 0, None, 2, None),
    ("enqueue", 1, None, 1, "tick-1"),
    ("enqueue", 1, None, 3, "tick-1"),  # the dedupe key returns the job above
    ("enqueue", 0, 30, 3, None),  # not due for 30 s
    ("claim", "worker-a"),  # lease 0: the higher priority
    ("progress", 0, -5, ""),
    ("progress", 0, 120, "x" * 300),
    ("cancel", 1),  # running: only a request
    ("heartbeat", 0),
    ("mark_cancelled", 0),
    ("cancel", 1),  # already cancelled
    ("retry", 1),
    ("claim", "worker-a"),  # lease 1
    ("advance", LEASE + 1),
    ("reap",),  # its only attempt is spent: failed
    ("claim", "worker-a"),  # lease 2
    ("heartbeat", 0),  # a lease that ended long ago
    ("advance", LEASE + 1),
    ("reap",),  # returned to the queue
    ("claim", "worker-a"),  # lease 3: the same worker, the next attempt
    ("complete", 2, {"stale": True}),  # fenced out by the attempt
    ("fail", 3, "e" * 5000, 5.5),
    ("claim", "worker-b"),  # lease 4
    ("defer", 4, 120),
    ("advance", 10),
    ("claim", "worker-b"),  # lease 5
    ("release", 5),
    ("claim", "worker-b"),  # lease 6
    ("complete", 6, {"at": T0}),
    ("retry", 0),  # completed jobs are not retried
    ("claim", "worker-a"),  # lease 7
    ("fail", 7, "boom", None),
    ("cancel", 1),
    ("retry", 1),
    ("claim", "worker-a"),
    ("enqueue", 1, None, 3, "tick-2"),  # job 3
    ("claim", "worker-b"),
    ("cancel", 3),
    ("advance", LEASE + 1),
    ("reap",),  # a cancel request whose worker stopped responding
]


def test_memory_queue_agrees_with_the_sql_queue_on_every_rule(engine):
    _run_on_both(engine, _SCRIPT)


_pick = st.integers(0, 7)
_enqueue = st.tuples(
    st.just("enqueue"),
    st.integers(-1, 1),
    st.sampled_from([None, 0, 30]),
    st.integers(1, 3),
    st.sampled_from([None, None, "tick-1", "tick-2"]),
)
_claim = st.tuples(st.just("claim"), st.sampled_from(["worker-a", "worker-b"]))
_operations = st.lists(
    st.one_of(
        _enqueue,
        _claim,
        _enqueue,
        _claim,  # twice: most operations need a job or a lease
        st.tuples(st.just("advance"), st.sampled_from([1, 30, LEASE + 1, 3600])),
        st.tuples(st.just("reap")),
        st.tuples(st.sampled_from(["cancel", "retry"]), _pick),
        st.tuples(st.sampled_from(["heartbeat", "release", "mark_cancelled"]), _pick),
        st.tuples(
            st.just("progress"),
            _pick,
            st.integers(-10, 120),
            st.sampled_from([None, "", "analysing", "x" * 300]),
        ),
        st.tuples(st.just("complete"), _pick, st.sampled_from([{}, {"n": 1}, {"at": T0}])),
        st.tuples(
            st.just("fail"),
            _pick,
            st.sampled_from(["boom", "e" * 5000]),
            st.sampled_from([None, 0, 5.5, 90]),
        ),
        st.tuples(st.just("defer"), _pick, st.sampled_from([10, 120])),
    ),
    min_size=5,
    max_size=50,
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=_operations)
def test_memory_queue_agrees_with_the_sql_queue_on_any_sequence(engine, operations):
    _run_on_both(engine, operations)
