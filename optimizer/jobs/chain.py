"""Queueing the next job of the loop from a handler: once per job, whatever its retries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from optimizer.jobs.context import ServiceContext
from optimizer.jobs.spec import JobSpec
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob


@dataclass(frozen=True)
class Chained:
    job_id: int | None  # None: nothing was queued
    note: str  # what was queued, or why not
    job_type: str | None = None


def enqueue_next(
    ctx: ServiceContext, spec: JobSpec, payload: dict[str, Any], dedupe_key: str
) -> tuple[int, bool]:
    """The queued job's id, and whether this call added it (False: an earlier attempt of
    the same job did, under the same dedupe key)."""
    queued, created = queue.enqueue(
        ctx.engine,
        NewJob(type=spec.name, payload=payload),
        max_attempts=spec.retry.attempts(ctx.settings.max_attempts),
        now=ctx.clock(),
        dedupe_key=dedupe_key,
    )
    return queued.id, created
