"""The worker in-process against real databases: outcomes, retries, timeouts, cancel,
lost leases and graceful shutdown."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import JobDeferred, PermanentJobError
from optimizer.jobs.context import ActiveJob, Handler, ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from optimizer.runtime.worker import Worker

FAST = Settings(
    poll_interval_seconds=0.05,
    lease_seconds=1.0,
    retry_base_seconds=0.0,
    job_timeout_seconds=30,
    shutdown_grace_seconds=0.5,
)


def make_worker(engine: Engine, handlers: dict[str, Handler], **overrides: Any) -> Worker:
    settings = FAST.model_copy(update=overrides)
    ctx = ServiceContext(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=utcnow,
    )
    return Worker(ctx, handlers, worker_id="test-worker", rng=random.Random(1))


def add_job(
    engine: Engine, job_type: str = "full_cycle", payload: dict | None = None, max_attempts: int = 3
) -> int:
    job, _ = queue.enqueue(
        engine,
        NewJob(type=job_type, payload=payload or {}),
        max_attempts=max_attempts,
        now=utcnow(),
    )
    return job.id


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await asyncio.to_thread(predicate):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def status_is(engine: Engine, job_id: int, *statuses: str) -> Callable[[], bool]:
    return lambda: queue.get_job(engine, job_id).status in statuses


async def test_completed_job_stores_result_and_counts(engine):
    seen: list[dict] = []

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        seen.append(job.payload)
        await job.report_progress(50, "half way")
        return {"answer": 42}

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine, payload={"prompt": "support"})
    worker.start()
    await wait_for(status_is(engine, job_id, "completed"))
    await worker.stop(1)
    job = queue.get_job(engine, job_id)
    assert job.to_dict()["result"] == {"answer": 42}
    assert (job.attempts, job.progress, job.locked_by) == (1, 100, None)
    assert seen == [{"prompt": "support"}]
    assert worker.ctx.stats.snapshot()["jobsCompleted"] == 1


async def test_progress_is_visible_while_running(engine):
    release = asyncio.Event()

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        await job.report_progress(40, "analysing segments")
        await release.wait()
        return {}

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine)
    worker.start()
    await wait_for(lambda: queue.get_job(engine, job_id).progress == 40)
    assert queue.get_job(engine, job_id).current_step == "analysing segments"
    release.set()
    await wait_for(status_is(engine, job_id, "completed"))
    await worker.stop(1)


async def test_failures_retry_with_backoff_then_fail_with_error_kept(engine):
    calls = 0

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"upstream broke on try {job.attempt}")

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine, max_attempts=3)
    worker.start()
    await wait_for(status_is(engine, job_id, "failed"))
    await worker.stop(1)
    job = queue.get_job(engine, job_id)
    assert calls == 3 and job.attempts == 3
    assert job.error == "RuntimeError: upstream broke on try 3"
    assert worker.ctx.stats.snapshot()["jobsFailed"] == 1


async def test_deferred_job_waits_without_spending_an_attempt(engine):
    until = utcnow() + timedelta(hours=1)
    calls = 0

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        nonlocal calls
        calls += 1
        raise JobDeferred("LLM_CALLS_PER_HOUR (100) is used up", until)

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine, max_attempts=1)
    worker.start()
    await wait_for(lambda: calls == 1 and queue.get_job(engine, job_id).status == "pending")
    await asyncio.sleep(0.3)  # several polls: a deferred job is not due again
    await worker.stop(1)
    job = queue.get_job(engine, job_id)
    assert calls == 1
    assert (job.status, job.attempts, job.locked_by) == ("pending", 0, None)
    assert job.run_after == until
    assert job.error == "LLM_CALLS_PER_HOUR (100) is used up"
    assert worker.ctx.stats.snapshot()["jobsFailed"] == 0


async def test_retry_waits_for_backoff_delay(engine):
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        raise RuntimeError("flaky")

    worker = make_worker(engine, {"full_cycle": handler}, retry_base_seconds=600)
    job_id = add_job(engine)
    worker.start()
    await wait_for(lambda: queue.get_job(engine, job_id).error is not None)
    await worker.stop(1)
    job = queue.get_job(engine, job_id)
    assert job.status == "pending" and job.attempts == 1
    wait = (job.run_after - utcnow()).total_seconds()
    assert 290 <= wait <= 600  # first retry: between half and all of the base delay


async def test_permanent_error_fails_at_once(engine):
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        raise PermanentJobError("prompt 'x' does not exist; create it first")

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine)
    worker.start()
    await wait_for(status_is(engine, job_id, "failed"))
    await worker.stop(1)
    job = queue.get_job(engine, job_id)
    assert job.attempts == 1 and job.error == "prompt 'x' does not exist; create it first"


@pytest.mark.parametrize(
    "raw,expected",
    [
        ('{"prompt": "sup', "payload is not valid JSON"),
        ("[1, 2]", "payload must be a JSON object, got an array"),
    ],
)
async def test_corrupt_payload_fails_that_job_and_worker_goes_on(engine, raw, expected):
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        return {"ok": True}

    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO optimization_jobs (type, payload, priority) "
                "VALUES ('full_cycle', :p, 5)"
            ),
            {"p": raw},
        )
        bad_id = conn.execute(text("SELECT max(id) FROM optimization_jobs")).scalar()
    good_id = add_job(engine)
    worker = make_worker(engine, {"full_cycle": handler})
    worker.start()
    await wait_for(status_is(engine, good_id, "completed"))
    await worker.stop(1)
    bad = queue.get_job(engine, bad_id)
    assert bad.status == "failed" and bad.attempts == 1
    assert expected in (bad.error or "")


async def test_job_type_without_handler_fails_with_clear_message(engine):
    worker = make_worker(engine, {})
    job_id = add_job(engine, "variant_generation")
    worker.start()
    await wait_for(status_is(engine, job_id, "failed"))
    await worker.stop(1)
    assert queue.get_job(engine, job_id).error == (
        "no handler for job type 'variant_generation' in this build of prompt-worker"
    )


async def test_timeout_fails_the_attempt(engine):
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        await asyncio.sleep(60)
        return {}

    worker = make_worker(engine, {"full_cycle": handler}, job_timeout_seconds=0.5)
    job_id = add_job(engine, max_attempts=1)
    worker.start()
    await wait_for(status_is(engine, job_id, "failed"))
    await worker.stop(1)
    assert "timed out after 0.5 s" in (queue.get_job(engine, job_id).error or "")


async def test_cancel_running_job_stops_handler_at_next_heartbeat(engine):
    cancelled = asyncio.Event()

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine)
    worker.start()
    await wait_for(status_is(engine, job_id, "running"))
    queue.cancel(engine, job_id, now=utcnow())
    await wait_for(status_is(engine, job_id, "cancelled"), timeout=5)
    await worker.stop(1)
    assert cancelled.is_set()


async def test_lost_lease_discards_result(engine):
    finished = asyncio.Event()

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        try:
            await asyncio.sleep(60)
        finally:
            finished.set()
        return {}

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine)
    worker.start()
    await wait_for(status_is(engine, job_id, "running"))
    with engine.begin() as conn:  # another worker took the job over
        conn.execute(
            text(
                "UPDATE optimization_jobs SET locked_by = 'other', "
                "attempts = attempts + 1 WHERE id = :id"
            ),
            {"id": job_id},
        )
    await asyncio.wait_for(finished.wait(), 5)
    await worker.stop(1)
    job = queue.get_job(engine, job_id)
    assert (job.status, job.locked_by, job.attempts) == ("running", "other", 2)


async def test_shutdown_releases_job_that_outlives_grace(engine):
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        await asyncio.sleep(60)
        return {}

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine)
    worker.start()
    await wait_for(status_is(engine, job_id, "running"))
    await worker.stop(0.3)
    job = queue.get_job(engine, job_id)
    assert (job.status, job.attempts, job.locked_by) == ("pending", 0, None)


async def test_shutdown_lets_short_job_finish(engine):
    started = asyncio.Event()

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        started.set()
        await asyncio.sleep(0.3)
        return {"done": True}

    worker = make_worker(engine, {"full_cycle": handler})
    job_id = add_job(engine)
    worker.start()
    await asyncio.wait_for(started.wait(), 5)
    await worker.stop(5)
    assert queue.get_job(engine, job_id).status == "completed"


async def test_concurrency_runs_jobs_side_by_side(engine):
    running = 0
    peak = 0

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.3)
        running -= 1
        return {}

    worker = make_worker(engine, {"full_cycle": handler}, worker_concurrency=3)
    ids = [add_job(engine) for _ in range(3)]
    worker.start()
    for job_id in ids:
        await wait_for(status_is(engine, job_id, "completed"))
    await worker.stop(1)
    assert peak == 3


async def test_monitoring_with_nothing_running_completes(engine):
    worker = make_worker(engine, default_handlers())
    job_id = add_job(engine, "experiment_monitoring")
    worker.start()
    await wait_for(status_is(engine, job_id, "completed"))
    await worker.stop(1)
    result = queue.get_job(engine, job_id).to_dict()["result"]
    assert result == {
        "experiments_checked": 0,
        "decisions": [],
        "message": "no running experiments",
    }
