"""Worker slots: claim a job, run its handler under a heartbeat, finish it (fenced).

One asyncio process runs WORKER_CONCURRENCY slots. Queue calls go through threads so a
slow query never stalls the heartbeats of other slots or the HTTP server. The queue is the
SQL one unless a test hands in another with the same interface (queue.JobQueue).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import SQLAlchemyError

from models.jobs import FINISHED_STATUSES
from optimizer import logs, webhooks
from optimizer import prometheus as metrics
from optimizer.errors import JobDeferred, PermanentJobError, PromptWorkerError, describe
from optimizer.jobs.context import ActiveJob, Handler, ServiceContext
from optimizer.runtime.backoff import retry, retry_delay
from optimizer.runtime.job_input import decode_stored_payload
from optimizer.runtime.queue import Job, JobQueue, Lease, SqlQueue

log = logging.getLogger("prompt_worker.worker")
T = TypeVar("T")
# A claim that fails costs one refused connection; a longer cap left every slot asleep for
# up to 30 s after the database came back.
DB_RETRY_MAX_SECONDS = 5.0
CLAIM_RETRY_BASE_SECONDS = 1.0
WRITE_RETRY_BASE_SECONDS = 0.5
CANCEL_WAIT_SECONDS = 10.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class Outcome(StrEnum):
    COMPLETED = "completed"
    FAILED = "failed"  # the handler raised or timed out
    CANCELLED = "cancelled"  # an admin cancelled it while running
    LOST = "lost"  # our lease was lost: someone else may own the job now
    RELEASED = "released"  # shutdown grace ran out: give it back
    DEFERRED = "deferred"  # a limit is used up: back to pending until it fits


@dataclass
class _Run:
    outcome: Outcome
    result: dict[str, Any] | None = None
    error: str | None = None
    permanent: bool = False
    until: datetime | None = None


def _fails_for_good(run: _Run, job: Job) -> bool:
    """A failed attempt ends the job when its error is permanent or it was the last allowed
    attempt; otherwise the job runs again after a backoff."""
    return run.permanent or job.attempts >= job.max_attempts


def _status_label(run: _Run, job: Job) -> str:
    """How a recorded attempt ended: completed, cancelled, released, deferred, failed (for
    good) or retried (back to pending after a backoff)."""
    if run.outcome is Outcome.DEFERRED and run.until is not None:
        return "deferred"
    if run.outcome in (Outcome.COMPLETED, Outcome.CANCELLED, Outcome.RELEASED):
        return run.outcome.value
    return "failed" if _fails_for_good(run, job) else "retried"


class Worker:
    def __init__(
        self,
        ctx: ServiceContext,
        handlers: Mapping[str, Handler],
        *,
        worker_id: str | None = None,
        wake: asyncio.Event | None = None,
        rng: random.Random | None = None,
        queue: JobQueue | None = None,
    ) -> None:
        self.ctx = ctx
        self.handlers = dict(handlers)
        self.queue = queue if queue is not None else SqlQueue(ctx.engine)
        self.worker_id = worker_id or new_worker_id()
        self.wake = wake or asyncio.Event()
        self.rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._grace_over = asyncio.Event()
        self._slots: list[asyncio.Task[None]] = []

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        n = self.ctx.settings.worker_concurrency
        self._slots = [asyncio.create_task(self._slot(i), name=f"slot-{i}") for i in range(n)]
        log.info("worker started", extra={"worker_id": self.worker_id, "slots": n})

    async def stop(self, grace_seconds: float) -> None:
        """Stop claiming; give running jobs `grace_seconds`, then hand them back."""
        self._stopping.set()
        self.wake.set()
        if not self._slots:
            return
        _, pending = await asyncio.wait(self._slots, timeout=grace_seconds)
        if pending:
            log.warning(
                "shutdown grace over; releasing running jobs", extra={"running": len(pending)}
            )
            self._grace_over.set()
            await asyncio.wait(pending, timeout=CANCEL_WAIT_SECONDS + 5)
        for task in self._slots:
            if not task.done():
                task.cancel()

    # ---- the slot loop ---------------------------------------------------------------

    async def _slot(self, index: int) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                job = await self._db(
                    self.queue.claim,
                    self.worker_id,
                    lease_seconds=self.ctx.settings.lease_seconds,
                    now=self.ctx.clock(),
                )
                failures = 0
            except SQLAlchemyError as exc:
                failures += 1
                delay = retry_delay(
                    failures, CLAIM_RETRY_BASE_SECONDS, cap_seconds=DB_RETRY_MAX_SECONDS
                )
                log.warning(
                    "cannot claim jobs: database unavailable",
                    extra={"error": describe(exc, 200), "retry_in": delay},
                )
                await self._pause(delay)
                continue
            if job is None:
                await self._pause(self.ctx.settings.poll_interval_seconds, wakeable=True)
                continue
            try:
                await self._execute(job)
            except Exception:  # a bug in recording must not end the slot; the reaper retries
                log.exception("job could not be recorded", extra={"job_id": job.id})

    async def _pause(self, seconds: float, *, wakeable: bool = False) -> None:
        waiters = [asyncio.ensure_future(self._stopping.wait())]
        if wakeable:
            waiters.append(asyncio.ensure_future(self.wake.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if wakeable and self.wake.is_set() and not self._stopping.is_set():
            self.wake.clear()

    @staticmethod
    async def _db(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    # ---- running one job -------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        # Bound here, before the handler's task exists: the task copies the context, so
        # its log lines carry the job and its LLM calls reach this service's metrics.
        with logs.job_context(job.id, job.type, job.attempts), metrics.bound(self.ctx.metrics):
            if self.ctx.metrics is not None:
                self.ctx.metrics.job_claimed(job)
            await self._run_job(job)

    async def _run_job(self, job: Job) -> None:
        lease = job.lease
        extra = {"job_id": job.id, "job_type": job.type, "attempt": job.attempts}
        log.info("job started", extra=extra)
        started = time.monotonic()
        try:
            payload = decode_stored_payload(job.payload)
            handler = self.handlers.get(job.type)
            if handler is None:
                raise PermanentJobError(
                    f"no handler for job type {job.type!r} in this build of prompt-worker"
                )
        except PermanentJobError as exc:
            run = _Run(Outcome.FAILED, error=str(exc), permanent=True)
        else:
            active = ActiveJob(
                job.id, job.type, job.attempts, payload, self._progress_reporter(lease)
            )
            run = await self._supervise(handler(self.ctx, active), lease)
        ran_for = time.monotonic() - started
        self._observe(job, run, await self._record(job, run), ran_for)
        log.info(
            "job finished",
            extra={
                **extra,
                "outcome": run.outcome.value,
                "seconds": round(time.monotonic() - started, 3),
                **({"error": run.error} if run.error else {}),
            },
        )

    def _progress_reporter(self, lease: Lease) -> Callable[[int, str | None], Awaitable[None]]:
        async def report(progress: int, step: str | None = None) -> None:
            try:
                await self._db(self.queue.report_progress, lease, progress, step)
            except SQLAlchemyError as exc:  # progress is advisory; never fail a job over it
                log.warning(
                    "could not record progress",
                    extra={"job_id": lease.job_id, "error": describe(exc, 200)},
                )

        return report

    async def _supervise(self, work: Awaitable[dict[str, Any]], lease: Lease) -> _Run:
        settings = self.ctx.settings
        task: asyncio.Task[dict[str, Any]] = asyncio.ensure_future(work)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.job_timeout_seconds
        lease_valid_until = loop.time() + settings.lease_seconds
        grace = asyncio.ensure_future(self._grace_over.wait())
        try:
            while True:
                timeout = max(0.0, min(settings.heartbeat_seconds, deadline - loop.time()))
                await asyncio.wait(
                    {task, grace}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if task.done():
                    return self._result_of(task)
                if grace.done():
                    return await self._abandon(task, _Run(Outcome.RELEASED))
                if loop.time() >= deadline:
                    return await self._abandon(
                        task,
                        _Run(
                            Outcome.FAILED,
                            error=f"timed out after {settings.job_timeout_seconds:g} s "
                            "(JOB_TIMEOUT_SECONDS)",
                        ),
                    )
                beat_at = loop.time()
                try:
                    beat = await self._db(
                        self.queue.heartbeat,
                        lease,
                        lease_seconds=settings.lease_seconds,
                        now=self.ctx.clock(),
                    )
                except SQLAlchemyError as exc:
                    log.warning(
                        "heartbeat failed",
                        extra={"job_id": lease.job_id, "error": describe(exc, 200)},
                    )
                    if loop.time() >= lease_valid_until:
                        return await self._abandon(task, _Run(Outcome.LOST))
                    continue
                if not beat.held:
                    return await self._abandon(task, _Run(Outcome.LOST))
                lease_valid_until = beat_at + settings.lease_seconds
                if beat.cancel_requested:
                    return await self._abandon(task, _Run(Outcome.CANCELLED))
        finally:
            grace.cancel()

    @staticmethod
    def _result_of(task: asyncio.Task[dict[str, Any]]) -> _Run:
        if task.cancelled():
            return _Run(Outcome.FAILED, error="handler was cancelled")
        exc = task.exception()
        if exc is None:
            result: object = task.result()  # typed, but a handler may return anything
            if not isinstance(result, dict):
                return _Run(
                    Outcome.FAILED,
                    permanent=True,
                    error=f"handler returned {type(result).__name__}, not a dict",
                )
            try:  # what queue.complete stores; a key it cannot write would end the slot
                json.dumps(result, default=str)
            except (TypeError, ValueError, RecursionError) as unwritable:
                return _Run(
                    Outcome.FAILED,
                    permanent=True,
                    error=f"handler result is not JSON: {describe(unwritable, 200)}",
                )
            return _Run(Outcome.COMPLETED, result=result)
        if isinstance(exc, JobDeferred):
            return _Run(Outcome.DEFERRED, error=str(exc), until=exc.until)
        if not isinstance(exc, PromptWorkerError):
            log.error("handler raised", exc_info=exc)
        return _Run(
            Outcome.FAILED, error=describe(exc, 4000), permanent=isinstance(exc, PermanentJobError)
        )

    @staticmethod
    async def _abandon(task: asyncio.Task[dict[str, Any]], run: _Run) -> _Run:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
            await asyncio.wait_for(task, CANCEL_WAIT_SECONDS)
        return run

    # ---- writing the outcome ---------------------------------------------------------

    async def _record(self, job: Job, run: _Run) -> str:
        """Write the outcome; return what was recorded (see _status_label), or "lost"."""
        if run.outcome is Outcome.LOST:
            log.warning("lease lost; result discarded", extra={"job_id": job.id})
            return "lost"
        status = _status_label(run, job)
        if not await self._write_until_lease_ends(self._outcome_write(job, run, status), job.id):
            log.warning(
                "job outcome not recorded: lease no longer ours",
                extra={"job_id": job.id, "outcome": run.outcome.value},
            )
            return "lost"
        if status == "completed":
            self.ctx.stats.add("jobsCompleted")
        elif status == "failed":
            self.ctx.stats.add("jobsFailed")
        return status

    def _outcome_write(self, job: Job, run: _Run, status: str) -> Callable[[], bool]:
        lease, now, q = job.lease, self.ctx.clock(), self.queue
        if status == "completed":
            return partial(q.complete, lease, run.result or {}, now=now)
        if status == "cancelled":
            return partial(q.mark_cancelled, lease, now=now)
        if status == "released":
            return partial(q.release, lease, now=now)
        if status == "deferred" and run.until is not None:
            return partial(q.defer, lease, run.error or "deferred", until=run.until)
        delay = (
            None
            if status == "failed"
            else retry_delay(job.attempts, self.ctx.settings.retry_base_seconds, self.rng)
        )
        return partial(q.fail, lease, run.error or "failed", now=now, retry_in_seconds=delay)

    def _observe(self, job: Job, run: _Run, status: str, seconds: float) -> None:
        """Count the attempt and announce a final outcome. Never raises into the slot."""
        try:
            if self.ctx.metrics is not None:
                self.ctx.metrics.job_finished(job.type, status, seconds)
            if self.ctx.webhooks is not None and status in FINISHED_STATUSES:
                self.ctx.webhooks.publish(
                    webhooks.JOB_FINISHED,
                    webhooks.job_finished_data(
                        job.id, job.type, status, job.attempts, run.error, seconds, run.result
                    ),
                )
        except Exception as exc:  # observability must never cost a job slot
            log.error("could not record job metrics or webhook", exc_info=exc)

    async def _write_until_lease_ends(self, write: Callable[[], bool], job_id: int) -> bool:
        """Retry a finishing write through a short database outage. Past our lease the
        reaper owns the job, so the write would be fenced out anyway."""
        give_up = time.monotonic() + self.ctx.settings.lease_seconds
        try:
            return await retry(
                partial(asyncio.to_thread, write),
                on=SQLAlchemyError,
                base_seconds=WRITE_RETRY_BASE_SECONDS,
                cap_seconds=DB_RETRY_MAX_SECONDS,
                may_wait=lambda delay: time.monotonic() + delay <= give_up,
            )
        except SQLAlchemyError as exc:
            log.error(
                "could not record job outcome; the reaper will return it",
                extra={"job_id": job_id, "error": describe(exc, 200)},
            )
            return False
