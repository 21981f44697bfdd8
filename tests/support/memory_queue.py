"""An in-memory job queue with the rules of optimizer.runtime.queue: leases, attempts,
fencing on (id, worker, attempt, running), cancel requests and progress.

It lets tests run the worker's logic without a database (tests/unit/test_worker_logic.py).
tests/integration/test_queue.py runs the same operations on this fake and on the SQL queue
and checks that they agree, so the two cannot drift apart. `failing` injects database
errors: {"claim": 2} makes the next two claims raise as if the database were down.
"""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.exc import OperationalError

from optimizer.errors import Conflict, NotFound
from optimizer.runtime.queue import MAX_ERROR_CHARS, HeartbeatResult, Job, Lease, NewJob, ReapResult


class MemoryQueue:
    def __init__(self) -> None:
        self.jobs: dict[int, Job] = {}
        self.failing: dict[str, int] = {}
        self._lock = threading.Lock()  # the worker calls in from threads

    def _outage(self, operation: str) -> None:
        if self.failing.get(operation, 0) > 0:
            self.failing[operation] -= 1
            raise OperationalError(operation, None, Exception("database unavailable (fake)"))

    def _holder(self, lease: Lease) -> Job | None:
        job = self.jobs.get(lease.job_id)
        if (
            job is None
            or job.status != "running"
            or job.locked_by != lease.worker_id
            or job.attempts != lease.attempt
        ):
            return None
        return job

    def _finish(self, operation: str, lease: Lease, **values: Any) -> bool:
        with self._lock:
            self._outage(operation)
            job = self._holder(lease)
            if job is None:
                return False
            self.jobs[job.id] = replace(job, locked_by=None, lease_expires_at=None, **values)
            return True

    # ---- admin side -----------------------------------------------------------------

    def enqueue(
        self, job: NewJob, *, max_attempts: int, now: datetime, dedupe_key: str | None = None
    ) -> tuple[Job, bool]:
        with self._lock:
            for existing in self.jobs.values():
                if dedupe_key is not None and existing.dedupe_key == dedupe_key:
                    return existing, False
            new = Job(
                id=max(self.jobs, default=0) + 1,
                type=job.type,
                status="pending",
                priority=job.priority,
                payload=json.dumps(job.payload, separators=(",", ":")),
                result=None,
                error=None,
                attempts=0,
                max_attempts=max_attempts,
                dedupe_key=dedupe_key,
                run_after=job.run_at or now,
                locked_by=None,
                lease_expires_at=None,
                cancel_requested=False,
                progress=0,
                current_step=None,
                created_at=now,
                started_at=None,
                finished_at=None,
            )
            self.jobs[new.id] = new
            return new, True

    def get_job(self, job_id: int) -> Job:
        with self._lock:
            if job_id not in self.jobs:
                raise NotFound(f"job {job_id} does not exist")
            return self.jobs[job_id]

    def cancel(self, job_id: int, *, now: datetime) -> Job:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise NotFound(f"job {job_id} does not exist")
            if job.status == "pending":
                job = replace(
                    job, status="cancelled", finished_at=now, error="cancelled by an admin"
                )
            elif job.status == "running":
                job = replace(job, cancel_requested=True)
            else:
                raise Conflict(
                    f"job {job_id} is already {job.status}; only pending or running "
                    "jobs can be cancelled"
                )
            self.jobs[job_id] = job
            return job

    def retry(self, job_id: int, *, now: datetime) -> Job:
        with self._lock:
            job = self.jobs.get(job_id)
            if job is None:
                raise NotFound(f"job {job_id} does not exist")
            if job.status not in ("failed", "cancelled"):
                raise Conflict(
                    f"job {job_id} is {job.status}; only failed or cancelled jobs can be retried"
                )
            job = replace(
                job,
                status="pending",
                attempts=0,
                run_after=now,
                finished_at=None,
                started_at=None,
                cancel_requested=False,
                progress=0,
                current_step=None,
            )
            self.jobs[job_id] = job
            return job

    def reap_expired(self, *, now: datetime) -> ReapResult:
        counts = {"requeued": 0, "failed": 0, "cancelled": 0}
        with self._lock:
            for job in list(self.jobs.values()):
                if (
                    job.status != "running"
                    or job.lease_expires_at is None
                    or not job.lease_expires_at < now
                ):
                    continue
                gone = {"locked_by": None, "lease_expires_at": None}
                if job.cancel_requested:
                    counts["cancelled"] += 1
                    job = replace(
                        job,
                        status="cancelled",
                        finished_at=now,
                        **gone,
                        error="cancelled by an admin; its worker stopped responding",
                    )
                elif job.attempts >= job.max_attempts:
                    counts["failed"] += 1
                    job = replace(
                        job,
                        status="failed",
                        finished_at=now,
                        **gone,
                        error="worker lease expired on the last allowed attempt "
                        "(the worker crashed or lost the database)",
                    )
                else:
                    counts["requeued"] += 1
                    job = replace(
                        job,
                        status="pending",
                        run_after=now,
                        **gone,
                        error="worker lease expired; returned to the queue",
                    )
                self.jobs[job.id] = job
        return ReapResult(**counts)

    # ---- worker side (optimizer.runtime.queue.JobQueue) --------------------------------

    def claim(self, worker_id: str, *, lease_seconds: float, now: datetime) -> Job | None:
        with self._lock:
            self._outage("claim")
            due = [j for j in self.jobs.values() if j.status == "pending" and j.run_after <= now]
            if not due:
                return None
            job = min(due, key=lambda j: (-j.priority, j.created_at, j.id))
            job = replace(
                job,
                status="running",
                locked_by=worker_id,
                attempts=job.attempts + 1,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now,
                cancel_requested=False,
            )
            self.jobs[job.id] = job
            return job

    def heartbeat(self, lease: Lease, *, lease_seconds: float, now: datetime) -> HeartbeatResult:
        with self._lock:
            self._outage("heartbeat")
            job = self._holder(lease)
            if job is None:
                return HeartbeatResult(held=False, cancel_requested=False)
            self.jobs[job.id] = replace(
                job, lease_expires_at=now + timedelta(seconds=lease_seconds)
            )
            return HeartbeatResult(held=True, cancel_requested=job.cancel_requested)

    def report_progress(self, lease: Lease, progress: int, step: str | None) -> bool:
        with self._lock:
            self._outage("report_progress")
            job = self._holder(lease)
            if job is None:
                return False
            self.jobs[job.id] = replace(
                job,
                progress=max(0, min(100, int(progress))),
                current_step=step[:255] if step else None,
            )
            return True

    def complete(self, lease: Lease, result: dict[str, Any], *, now: datetime) -> bool:
        return self._finish(
            "complete",
            lease,
            status="completed",
            finished_at=now,
            progress=100,
            error=None,
            result=json.dumps(result, separators=(",", ":"), default=str),
        )

    def fail(
        self, lease: Lease, error: str, *, now: datetime, retry_in_seconds: float | None
    ) -> bool:
        error = error[:MAX_ERROR_CHARS]
        if retry_in_seconds is None:
            return self._finish("fail", lease, status="failed", finished_at=now, error=error)
        return self._finish(
            "fail",
            lease,
            status="pending",
            error=error,
            run_after=now + timedelta(seconds=retry_in_seconds),
        )

    def mark_cancelled(self, lease: Lease, *, now: datetime) -> bool:
        return self._finish(
            "mark_cancelled",
            lease,
            status="cancelled",
            finished_at=now,
            error="cancelled by an admin while running",
        )

    def defer(self, lease: Lease, reason: str, *, until: datetime) -> bool:
        return self._finish(
            "defer",
            lease,
            status="pending",
            run_after=until,
            attempts=lease.attempt - 1,
            error=reason[:MAX_ERROR_CHARS],
            current_step=None,
        )

    def release(self, lease: Lease, *, now: datetime) -> bool:
        return self._finish(
            "release",
            lease,
            status="pending",
            run_after=now,
            attempts=lease.attempt - 1,
            current_step=None,
        )
