"""The worker's logic on the in-memory queue, without a database: retries and their delays,
the last attempt, permanent errors, deferral, cancel, lost leases, timeouts, progress, and
database errors on the way. tests/integration/test_worker.py runs the same worker on SQLite
and PostgreSQL; tests/integration/test_queue.py checks that the fake keeps the SQL rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import create_engine

from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import JobDeferred, PermanentJobError
from optimizer.jobs.context import ActiveJob, Handler, ServiceContext
from optimizer.run_stats import RunStats
from optimizer.runtime.backoff import MAX_RETRY_DELAY_SECONDS, retry_delay
from optimizer.runtime.queue import Job, NewJob
from optimizer.runtime.worker import Worker
from tests.support.memory_queue import MemoryQueue

T0 = datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC)
FAST: dict[str, Any] = {
    "poll_interval_seconds": 0.05,
    "lease_seconds": 1.0,
    "retry_base_seconds": 0.0,
    "job_timeout_seconds": 30,
    "shutdown_grace_seconds": 0.5,
}


def make_worker(
    fake: MemoryQueue, handlers: dict[str, Handler], *, seed: int = 1, **overrides: Any
) -> Worker:
    # The engine is never connected: the worker reaches jobs only through `queue`. The
    # clock stands still, so a job retried after a delay is not due again.
    engine = create_engine("sqlite://")
    ctx = ServiceContext(
        settings=Settings(**{**FAST, **overrides}),
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=lambda: T0,
    )
    return Worker(ctx, handlers, worker_id="w", rng=random.Random(seed), queue=fake)


def add_job(fake: MemoryQueue, max_attempts: int = 3, payload: dict | None = None) -> int:
    job, _ = fake.enqueue(
        NewJob(type="full_cycle", payload=payload or {}), max_attempts=max_attempts, now=T0
    )
    return job.id


@contextlib.asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    worker.start()
    try:
        yield worker
    finally:
        await worker.stop(1)


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def status_is(fake: MemoryQueue, job_id: int, *statuses: str) -> Callable[[], bool]:
    return lambda: fake.get_job(job_id).status in statuses


def logged(caplog: pytest.LogCaptureFixture, message: str) -> Callable[[], bool]:
    return lambda: any(r.getMessage() == message for r in caplog.records)


def failing(error: Exception) -> Handler:
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        raise error

    return handler


def succeeding() -> Handler:
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        return {"ok": True}

    return handler


def waiting_forever(cancelled: asyncio.Event) -> Handler:
    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return {}

    return handler


# --- outcomes ----------------------------------------------------------------------------


async def test_completed_job_keeps_its_result_and_is_counted():
    fake = MemoryQueue()
    seen: list[dict] = []

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        seen.append(job.payload)
        await job.report_progress(50, "half way")
        return {"answer": 42}

    job_id = add_job(fake, payload={"prompt": "support"})
    async with running(make_worker(fake, {"full_cycle": handler})) as worker:
        await wait_for(status_is(fake, job_id, "completed"))
    job = fake.get_job(job_id)
    assert job.to_dict()["result"] == {"answer": 42}
    assert (job.attempts, job.progress, job.locked_by, job.finished_at) == (1, 100, None, T0)
    assert seen == [{"prompt": "support"}]
    assert worker.ctx.stats.snapshot()["jobsCompleted"] == 1


async def test_failures_are_retried_until_the_last_attempt_fails_the_job():
    fake = MemoryQueue()
    tries: list[int] = []

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        tries.append(job.attempt)
        raise RuntimeError(f"upstream broke on try {job.attempt}")

    job_id = add_job(fake, max_attempts=3)
    async with running(make_worker(fake, {"full_cycle": handler})) as worker:
        await wait_for(status_is(fake, job_id, "failed"))
    job = fake.get_job(job_id)
    assert tries == [1, 2, 3] and job.attempts == 3
    assert job.error == "RuntimeError: upstream broke on try 3"
    assert worker.ctx.stats.snapshot()["jobsFailed"] == 1


def _fail_attempt(
    max_attempts: int, attempt: int, permanent: bool, base: float, seed: int
) -> tuple[Job, dict[str, int], int]:
    """Run attempt number `attempt` of a job whose handler fails; the attempts before it
    were spent by another worker."""
    fake = MemoryQueue()
    job_id = add_job(fake, max_attempts=max_attempts)
    for _ in range(attempt - 1):
        earlier = fake.claim("earlier", lease_seconds=60, now=T0)
        assert earlier is not None
        fake.fail(earlier.lease, "earlier failure", now=T0, retry_in_seconds=0)
    calls = 0

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        nonlocal calls
        calls += 1
        raise PermanentJobError("bad input") if permanent else RuntimeError("flaky")

    async def scenario() -> RunStats:
        worker = make_worker(fake, {"full_cycle": handler}, seed=seed, retry_base_seconds=base)
        async with running(worker):
            await wait_for(
                lambda: (
                    fake.get_job(job_id).attempts == attempt
                    and fake.get_job(job_id).status != "running"
                )
            )
        return worker.ctx.stats

    stats = asyncio.run(scenario())
    return fake.get_job(job_id), stats.snapshot(), calls


@settings(max_examples=25, deadline=None)
@given(
    max_attempts=st.integers(1, 5),
    data=st.data(),
    permanent=st.booleans(),
    base=st.floats(1.0, 3600.0),
    seed=st.integers(0, 2**32),
)
def test_a_failed_attempt_is_retried_after_the_backoff_or_ends_the_job(
    max_attempts: int, data: st.DataObject, permanent: bool, base: float, seed: int
):
    attempt = data.draw(st.integers(1, max_attempts), label="attempt")
    job, stats, calls = _fail_attempt(max_attempts, attempt, permanent, base, seed)
    assert calls == 1
    assert job.attempts == attempt and job.locked_by is None
    if permanent or attempt == max_attempts:
        assert (job.status, job.finished_at) == ("failed", T0)
        assert job.error == ("bad input" if permanent else "RuntimeError: flaky")
        assert stats["jobsFailed"] == 1
    else:
        # The worker's first draw from its seeded generator: the exact delay, stored.
        delay = retry_delay(attempt, base, random.Random(seed))
        ceiling = min(MAX_RETRY_DELAY_SECONDS, base * 2 ** (attempt - 1))
        assert ceiling / 2 <= delay <= ceiling
        assert (job.status, job.finished_at) == ("pending", None)
        assert job.run_after == T0 + timedelta(seconds=delay)
        assert stats["jobsFailed"] == 0


async def test_permanent_error_fails_at_once_with_its_message():
    fake = MemoryQueue()
    job_id = add_job(fake, max_attempts=5)
    handler = failing(PermanentJobError("prompt 'x' does not exist; create it first"))
    async with running(make_worker(fake, {"full_cycle": handler})):
        await wait_for(status_is(fake, job_id, "failed"))
    job = fake.get_job(job_id)
    assert job.attempts == 1 and job.error == "prompt 'x' does not exist; create it first"


async def test_job_type_without_handler_fails_for_good():
    fake = MemoryQueue()
    job_id = add_job(fake)
    async with running(make_worker(fake, {})):
        await wait_for(status_is(fake, job_id, "failed"))
    job = fake.get_job(job_id)
    assert job.attempts == 1
    assert job.error == "no handler for job type 'full_cycle' in this build of prompt-worker"


async def test_handler_returning_no_dict_fails_for_good():
    fake = MemoryQueue()

    async def handler(ctx: ServiceContext, job: ActiveJob) -> Any:
        return [1, 2]

    job_id = add_job(fake)
    async with running(make_worker(fake, {"full_cycle": handler})):
        await wait_for(status_is(fake, job_id, "failed"))
    job = fake.get_job(job_id)
    assert (job.attempts, job.error) == (1, "handler returned list, not a dict")


async def test_handler_result_that_cannot_be_stored_fails_for_good_and_the_slot_goes_on():
    fake = MemoryQueue()
    done: list[int] = []

    async def handler(ctx: ServiceContext, job: ActiveJob) -> Any:
        done.append(job.id)
        return {"ok": True} if len(done) > 1 else {(1, 2): "a tuple key json cannot write"}

    first, second = add_job(fake), add_job(fake)
    async with running(make_worker(fake, {"full_cycle": handler})):
        await wait_for(status_is(fake, second, "completed"))
    job = fake.get_job(first)
    assert job.status == "failed" and job.attempts == 1
    assert job.error is not None and job.error.startswith("handler result is not JSON: TypeError")


async def test_deferred_job_waits_without_spending_an_attempt():
    fake = MemoryQueue()
    until = T0 + timedelta(hours=1)
    handler = failing(JobDeferred("LLM_CALLS_PER_HOUR (100) is used up", until))
    job_id = add_job(fake, max_attempts=1)
    async with running(make_worker(fake, {"full_cycle": handler})) as worker:
        await wait_for(lambda: fake.get_job(job_id).error is not None)
    job = fake.get_job(job_id)
    assert (job.status, job.attempts, job.locked_by, job.run_after) == ("pending", 0, None, until)
    assert job.error == "LLM_CALLS_PER_HOUR (100) is used up"
    assert worker.ctx.stats.snapshot()["jobsFailed"] == 0


async def test_timeout_fails_the_attempt():
    fake = MemoryQueue()
    job_id = add_job(fake, max_attempts=1)
    handler = waiting_forever(asyncio.Event())
    async with running(make_worker(fake, {"full_cycle": handler}, job_timeout_seconds=1)):
        await wait_for(status_is(fake, job_id, "failed"))
    assert fake.get_job(job_id).error == "timed out after 1 s (JOB_TIMEOUT_SECONDS)"


# --- cancel, leases, shutdown --------------------------------------------------------------


async def test_cancel_request_stops_the_handler_at_the_next_heartbeat():
    fake = MemoryQueue()
    cancelled = asyncio.Event()
    job_id = add_job(fake)
    async with running(
        make_worker(fake, {"full_cycle": waiting_forever(cancelled)}, lease_seconds=0.6)
    ):
        await wait_for(status_is(fake, job_id, "running"))
        assert fake.cancel(job_id, now=T0).cancel_requested
        await wait_for(status_is(fake, job_id, "cancelled"))
    assert cancelled.is_set()
    assert fake.get_job(job_id).error == "cancelled by an admin while running"


async def test_a_lease_taken_over_stops_the_handler_and_writes_nothing(caplog):
    fake = MemoryQueue()
    cancelled = asyncio.Event()
    job_id = add_job(fake)
    async with running(
        make_worker(fake, {"full_cycle": waiting_forever(cancelled)}, lease_seconds=0.6)
    ):
        await wait_for(status_is(fake, job_id, "running"))
        later = T0 + timedelta(hours=1)  # the reaper saw the lease expire; another took it
        assert fake.reap_expired(now=later).requeued == 1
        assert fake.claim("other", lease_seconds=60, now=later) is not None
        await asyncio.wait_for(cancelled.wait(), 5)
        await wait_for(logged(caplog, "lease lost; result discarded"))
    job = fake.get_job(job_id)
    assert (job.status, job.locked_by, job.attempts) == ("running", "other", 2)


async def test_a_result_after_the_lease_was_taken_over_is_fenced_out(caplog):
    fake = MemoryQueue()
    taken_over = asyncio.Event()

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        await taken_over.wait()
        return {"late": True}

    job_id = add_job(fake)
    # A long lease: no heartbeat notices the takeover before the handler returns.
    async with running(make_worker(fake, {"full_cycle": handler}, lease_seconds=60)) as worker:
        await wait_for(status_is(fake, job_id, "running"))
        fake.reap_expired(now=T0 + timedelta(hours=1))
        fake.claim("other", lease_seconds=60, now=T0 + timedelta(hours=1))
        taken_over.set()
        await wait_for(logged(caplog, "job outcome not recorded: lease no longer ours"))
    job = fake.get_job(job_id)
    assert (job.status, job.locked_by, job.result) == ("running", "other", None)
    assert worker.ctx.stats.snapshot()["jobsCompleted"] == 0


async def test_heartbeats_failing_past_the_lease_give_the_job_up(caplog):
    fake = MemoryQueue()
    cancelled = asyncio.Event()
    job_id = add_job(fake)
    async with running(
        make_worker(fake, {"full_cycle": waiting_forever(cancelled)}, lease_seconds=0.6)
    ):
        await wait_for(status_is(fake, job_id, "running"))
        fake.failing["heartbeat"] = 1000
        await asyncio.wait_for(cancelled.wait(), 5)
        await wait_for(logged(caplog, "lease lost; result discarded"))
    # Nothing was written: the reaper returns the job once the lease has expired.
    assert fake.get_job(job_id).status == "running"
    assert fake.reap_expired(now=T0 + timedelta(hours=1)).requeued == 1


async def test_shutdown_hands_back_a_job_that_outlives_the_grace():
    fake = MemoryQueue()
    job_id = add_job(fake)
    worker = make_worker(fake, {"full_cycle": waiting_forever(asyncio.Event())})
    worker.start()
    await wait_for(status_is(fake, job_id, "running"))
    await worker.stop(0.2)
    job = fake.get_job(job_id)
    assert (job.status, job.attempts, job.locked_by) == ("pending", 0, None)


# --- progress and database errors ----------------------------------------------------------


async def test_progress_is_recorded_while_running_and_a_failed_report_is_ignored(caplog):
    fake = MemoryQueue()
    proceed = asyncio.Event()

    async def handler(ctx: ServiceContext, job: ActiveJob) -> dict:
        await job.report_progress(40, "analysing segments")
        await proceed.wait()
        fake.failing["report_progress"] = 1
        await job.report_progress(90, "almost")
        return {}

    job_id = add_job(fake)
    async with running(make_worker(fake, {"full_cycle": handler})):
        await wait_for(lambda: fake.get_job(job_id).progress == 40)
        assert fake.get_job(job_id).current_step == "analysing segments"
        proceed.set()
        await wait_for(status_is(fake, job_id, "completed"))
    assert logged(caplog, "could not record progress")()


async def test_claims_go_on_after_the_database_fails(caplog):
    fake = MemoryQueue()
    fake.failing["claim"] = 1
    job_id = add_job(fake)
    async with running(make_worker(fake, {"full_cycle": succeeding()})):
        await wait_for(status_is(fake, job_id, "completed"))
    [warning] = [
        r for r in caplog.records if r.getMessage() == "cannot claim jobs: database unavailable"
    ]
    assert warning.__dict__["retry_in"] == 1.0


async def test_the_outcome_write_is_retried_through_a_short_outage():
    fake = MemoryQueue()
    fake.failing["complete"] = 1
    job_id = add_job(fake)
    async with running(make_worker(fake, {"full_cycle": succeeding()})) as worker:
        await wait_for(status_is(fake, job_id, "completed"))
    assert worker.ctx.stats.snapshot()["jobsCompleted"] == 1


async def test_the_outcome_write_gives_up_when_the_lease_ends(caplog):
    fake = MemoryQueue()
    fake.failing["complete"] = 1000
    job_id = add_job(fake)
    async with running(make_worker(fake, {"full_cycle": succeeding()})) as worker:
        await wait_for(logged(caplog, "could not record job outcome; the reaper will return it"))
    assert fake.get_job(job_id).status == "running"
    assert worker.ctx.stats.snapshot()["jobsCompleted"] == 0


@pytest.fixture(autouse=True)
def _worker_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="prompt_worker")
