"""The durable job queue on the optimization_jobs table.

Every function is one short transaction. Writes that end or touch a claimed job are fenced
on (id, locked_by, attempts, status='running'), so a worker whose lease expired and was
taken over can never overwrite the new owner's work.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Table, delete, func, select, update
from sqlalchemy.engine import Engine, RowMapping

from models.jobs import FINISHED_STATUSES, OptimizationJob
from optimizer.clock import iso
from optimizer.db import upsert_insert
from optimizer.errors import Conflict, NotFound

J = OptimizationJob
_JOBS: Table = J.__table__  # type: ignore[assignment]  # declared as a FromClause
_COLUMNS = tuple(_JOBS.c)
MAX_ERROR_CHARS = 4000


@dataclass(frozen=True)
class NewJob:
    """A job to add, already checked (optimizer.runtime.job_input checks what admins send)."""

    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    run_at: datetime | None = None


@dataclass(frozen=True)
class Job:
    id: int
    type: str
    status: str
    priority: int
    payload: str
    result: str | None
    error: str | None
    attempts: int
    max_attempts: int
    dedupe_key: str | None
    run_after: datetime
    locked_by: str | None
    lease_expires_at: datetime | None
    cancel_requested: bool
    progress: int
    current_step: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Job:
        return cls(**{c.name: row[c.name] for c in _COLUMNS})

    @property
    def lease(self) -> Lease:
        if self.locked_by is None:
            raise ValueError(f"job {self.id} is not claimed")
        return Lease(self.id, self.locked_by, self.attempts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; payload and result are decoded when they hold valid JSON."""
        out = asdict(self)
        for key in ("payload", "result"):
            raw = out[key]
            if isinstance(raw, str):
                # A row written by hand may hold a huge number or deep nesting: kept as text.
                with contextlib.suppress(ValueError, RecursionError):
                    out[key] = json.loads(raw)
        for key, value in out.items():
            if isinstance(value, datetime):
                out[key] = iso(value)
        return out


@dataclass(frozen=True)
class Lease:
    job_id: int
    worker_id: str
    attempt: int


def _fenced(lease: Lease) -> Any:
    return (
        (J.id == lease.job_id)
        & (J.locked_by == lease.worker_id)
        & (J.attempts == lease.attempt)
        & (J.status == "running")
    )


def _insert_ignoring_duplicates(engine: Engine) -> Any:
    return upsert_insert(engine.dialect.name, _JOBS).on_conflict_do_nothing(
        index_elements=["dedupe_key"]
    )


def enqueue(
    engine: Engine, job: NewJob, *, max_attempts: int, now: datetime, dedupe_key: str | None = None
) -> tuple[Job, bool]:
    """Add a job. With a dedupe key already taken, nothing is added and the existing job
    is returned with created=False."""
    values = {
        "type": job.type,
        "payload": json.dumps(job.payload, separators=(",", ":")),
        "priority": job.priority,
        "max_attempts": max_attempts,
        "run_after": job.run_at or now,
        "created_at": now,
        "dedupe_key": dedupe_key,
    }
    stmt = _insert_ignoring_duplicates(engine).values(**values).returning(*_COLUMNS)
    with engine.begin() as conn:
        row = conn.execute(stmt).mappings().first()
        if row is not None:
            return Job.from_row(row), True
        existing = (
            conn.execute(select(*_COLUMNS).where(J.dedupe_key == dedupe_key)).mappings().one()
        )
        return Job.from_row(existing), False


def claim(engine: Engine, worker_id: str, *, lease_seconds: float, now: datetime) -> Job | None:
    """Take the due pending job with the highest priority, then the oldest, in one statement.

    PostgreSQL: the row lock with SKIP LOCKED lets concurrent claimers pass each other.
    SQLite: the statement runs under BEGIN IMMEDIATE, which serialises writers."""
    next_id = (
        select(J.id)
        .where(J.status == "pending", J.run_after <= now)
        .order_by(J.priority.desc(), J.created_at, J.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    stmt = (
        update(J)
        .where(J.id == next_id, J.status == "pending")
        .values(
            status="running",
            locked_by=worker_id,
            attempts=J.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            started_at=now,
            cancel_requested=False,
        )
        .returning(*_COLUMNS)
    )
    with engine.begin() as conn:
        row = conn.execute(stmt).mappings().first()
    return Job.from_row(row) if row is not None else None


@dataclass(frozen=True)
class HeartbeatResult:
    held: bool  # False: the lease was lost; stop without writing anything
    cancel_requested: bool  # True: an admin cancelled the running job


def heartbeat(
    engine: Engine, lease: Lease, *, lease_seconds: float, now: datetime
) -> HeartbeatResult:
    stmt = (
        update(J)
        .where(_fenced(lease))
        .values(lease_expires_at=now + timedelta(seconds=lease_seconds))
        .returning(J.cancel_requested)
    )
    with engine.begin() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        return HeartbeatResult(held=False, cancel_requested=False)
    return HeartbeatResult(held=True, cancel_requested=bool(row[0]))


def report_progress(engine: Engine, lease: Lease, progress: int, step: str | None) -> bool:
    stmt = (
        update(J)
        .where(_fenced(lease))
        .values(progress=max(0, min(100, int(progress))), current_step=step[:255] if step else None)
    )
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def _finish(engine: Engine, lease: Lease, **values: Any) -> bool:
    stmt = update(J).where(_fenced(lease)).values(locked_by=None, lease_expires_at=None, **values)
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount == 1


def complete(engine: Engine, lease: Lease, result: dict[str, Any], *, now: datetime) -> bool:
    return _finish(
        engine,
        lease,
        status="completed",
        finished_at=now,
        progress=100,
        error=None,
        result=json.dumps(result, separators=(",", ":"), default=str),
    )


def fail(
    engine: Engine, lease: Lease, error: str, *, now: datetime, retry_in_seconds: float | None
) -> bool:
    """Record a failed attempt: back to pending after `retry_in_seconds`, or `failed` for good
    when that is None."""
    error = error[:MAX_ERROR_CHARS]
    if retry_in_seconds is None:
        return _finish(engine, lease, status="failed", finished_at=now, error=error)
    return _finish(
        engine,
        lease,
        status="pending",
        error=error,
        run_after=now + timedelta(seconds=retry_in_seconds),
    )


def mark_cancelled(engine: Engine, lease: Lease, *, now: datetime) -> bool:
    return _finish(
        engine,
        lease,
        status="cancelled",
        finished_at=now,
        error="cancelled by an admin while running",
    )


def defer(engine: Engine, lease: Lease, reason: str, *, until: datetime) -> bool:
    """Put a job back until `until` because it cannot run yet (a limit is used up); the
    attempt does not count, and `error` says why it waits."""
    return _finish(
        engine,
        lease,
        status="pending",
        run_after=until,
        attempts=J.attempts - 1,
        error=reason[:MAX_ERROR_CHARS],
        current_step=None,
    )


def release(engine: Engine, lease: Lease, *, now: datetime) -> bool:
    """Give a job back at shutdown; the interrupted attempt does not count."""
    return _finish(
        engine, lease, status="pending", run_after=now, attempts=J.attempts - 1, current_step=None
    )


def cancel(engine: Engine, job_id: int, *, now: datetime) -> Job:
    """Cancel a pending job at once; ask a running one to stop at its next heartbeat."""
    with engine.begin() as conn:
        row = (
            conn.execute(
                update(J)
                .where(J.id == job_id, J.status == "pending")
                .values(status="cancelled", finished_at=now, error="cancelled by an admin")
                .returning(*_COLUMNS)
            )
            .mappings()
            .first()
        )
        if row is None:
            row = (
                conn.execute(
                    update(J)
                    .where(J.id == job_id, J.status == "running")
                    .values(cancel_requested=True)
                    .returning(*_COLUMNS)
                )
                .mappings()
                .first()
            )
        if row is not None:
            return Job.from_row(row)
        current = conn.execute(select(J.status).where(J.id == job_id)).scalar()
    if current is None:
        raise NotFound(f"job {job_id} does not exist")
    raise Conflict(
        f"job {job_id} is already {current}; only pending or running jobs can be cancelled"
    )


def retry(engine: Engine, job_id: int, *, now: datetime) -> Job:
    """Put a failed or cancelled job back in the queue with a fresh set of attempts."""
    with engine.begin() as conn:
        row = (
            conn.execute(
                update(J)
                .where(J.id == job_id, J.status.in_(("failed", "cancelled")))
                .values(
                    status="pending",
                    attempts=0,
                    run_after=now,
                    finished_at=None,
                    started_at=None,
                    cancel_requested=False,
                    progress=0,
                    current_step=None,
                )
                .returning(*_COLUMNS)
            )
            .mappings()
            .first()
        )
        if row is not None:
            return Job.from_row(row)
        current = conn.execute(select(J.status).where(J.id == job_id)).scalar()
    if current is None:
        raise NotFound(f"job {job_id} does not exist")
    raise Conflict(f"job {job_id} is {current}; only failed or cancelled jobs can be retried")


@dataclass(frozen=True)
class ReapResult:
    requeued: int
    failed: int
    cancelled: int


def reap_expired(engine: Engine, *, now: datetime) -> ReapResult:
    """Return jobs whose worker stopped renewing its lease (crashed, frozen, cut off)."""
    expired = (J.status == "running") & (J.lease_expires_at < now)
    with engine.begin() as conn:
        cancelled = conn.execute(
            update(J)
            .where(expired, J.cancel_requested.is_(True))
            .values(
                status="cancelled",
                finished_at=now,
                locked_by=None,
                lease_expires_at=None,
                error="cancelled by an admin; its worker stopped responding",
            )
        ).rowcount
        failed = conn.execute(
            update(J)
            .where(expired, J.attempts >= J.max_attempts)
            .values(
                status="failed",
                finished_at=now,
                locked_by=None,
                lease_expires_at=None,
                error="worker lease expired on the last allowed attempt "
                "(the worker crashed or lost the database)",
            )
        ).rowcount
        requeued = conn.execute(
            update(J)
            .where(expired)
            .values(
                status="pending",
                run_after=now,
                locked_by=None,
                lease_expires_at=None,
                error="worker lease expired; returned to the queue",
            )
        ).rowcount
    return ReapResult(requeued=requeued, failed=failed, cancelled=cancelled)


def prune_finished(engine: Engine, *, older_than: datetime) -> int:
    stmt = delete(J).where(J.status.in_(FINISHED_STATUSES), J.finished_at < older_than)
    with engine.begin() as conn:
        return conn.execute(stmt).rowcount


def get_job(engine: Engine, job_id: int) -> Job:
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(J.id == job_id)).mappings().first()
    if row is None:
        raise NotFound(f"job {job_id} does not exist")
    return Job.from_row(row)


def get_jobs(engine: Engine, job_ids: Sequence[int]) -> list[Job]:
    """The jobs with these ids that exist, in one query (ids missing from the table are left
    out), by id."""
    if not job_ids:
        return []
    stmt = select(*_COLUMNS).where(J.id.in_(set(job_ids))).order_by(J.id)
    with engine.connect() as conn:
        return [Job.from_row(r) for r in conn.execute(stmt).mappings()]


def list_jobs(
    engine: Engine,
    *,
    status: str | None = None,
    job_type: str | None = None,
    limit: int = 50,
    before_id: int | None = None,
) -> list[Job]:
    """Newest first; `before_id` gives the next page (jobs with a smaller id)."""
    stmt = select(*_COLUMNS).order_by(J.id.desc()).limit(limit)
    if before_id is not None:
        stmt = stmt.where(J.id < before_id)
    if status is not None:
        stmt = stmt.where(J.status == status)
    if job_type is not None:
        stmt = stmt.where(J.type == job_type)
    with engine.connect() as conn:
        return [Job.from_row(r) for r in conn.execute(stmt).mappings()]


def count_by_status(engine: Engine) -> dict[str, int]:
    stmt = select(J.status, func.count()).group_by(J.status)
    with engine.connect() as conn:
        return {status: int(n) for status, n in conn.execute(stmt)}


class JobQueue(Protocol):
    """What the worker needs of a queue. SqlQueue is the real one; tests also run the worker
    on an in-memory fake (tests/support/memory_queue.py) that keeps the same rules."""

    def claim(self, worker_id: str, *, lease_seconds: float, now: datetime) -> Job | None: ...

    def heartbeat(
        self, lease: Lease, *, lease_seconds: float, now: datetime
    ) -> HeartbeatResult: ...

    def report_progress(self, lease: Lease, progress: int, step: str | None) -> bool: ...

    def complete(self, lease: Lease, result: dict[str, Any], *, now: datetime) -> bool: ...

    def fail(
        self, lease: Lease, error: str, *, now: datetime, retry_in_seconds: float | None
    ) -> bool: ...

    def mark_cancelled(self, lease: Lease, *, now: datetime) -> bool: ...

    def defer(self, lease: Lease, reason: str, *, until: datetime) -> bool: ...

    def release(self, lease: Lease, *, now: datetime) -> bool: ...


class SqlQueue:
    """The functions above bound to one engine: the worker's queue in the service. Besides
    the worker's operations it binds the admin ones a test compares with the fake."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def enqueue(
        self, job: NewJob, *, max_attempts: int, now: datetime, dedupe_key: str | None = None
    ) -> tuple[Job, bool]:
        return enqueue(self.engine, job, max_attempts=max_attempts, now=now, dedupe_key=dedupe_key)

    def claim(self, worker_id: str, *, lease_seconds: float, now: datetime) -> Job | None:
        return claim(self.engine, worker_id, lease_seconds=lease_seconds, now=now)

    def heartbeat(self, lease: Lease, *, lease_seconds: float, now: datetime) -> HeartbeatResult:
        return heartbeat(self.engine, lease, lease_seconds=lease_seconds, now=now)

    def report_progress(self, lease: Lease, progress: int, step: str | None) -> bool:
        return report_progress(self.engine, lease, progress, step)

    def complete(self, lease: Lease, result: dict[str, Any], *, now: datetime) -> bool:
        return complete(self.engine, lease, result, now=now)

    def fail(
        self, lease: Lease, error: str, *, now: datetime, retry_in_seconds: float | None
    ) -> bool:
        return fail(self.engine, lease, error, now=now, retry_in_seconds=retry_in_seconds)

    def mark_cancelled(self, lease: Lease, *, now: datetime) -> bool:
        return mark_cancelled(self.engine, lease, now=now)

    def defer(self, lease: Lease, reason: str, *, until: datetime) -> bool:
        return defer(self.engine, lease, reason, until=until)

    def release(self, lease: Lease, *, now: datetime) -> bool:
        return release(self.engine, lease, now=now)

    def cancel(self, job_id: int, *, now: datetime) -> Job:
        return cancel(self.engine, job_id, now=now)

    def retry(self, job_id: int, *, now: datetime) -> Job:
        return retry(self.engine, job_id, now=now)

    def reap_expired(self, *, now: datetime) -> ReapResult:
        return reap_expired(self.engine, now=now)

    def get_job(self, job_id: int) -> Job:
        return get_job(self.engine, job_id)
