"""What defines a job type: one `JobSpec` per type, in that type's own module.

The registry (optimizer.jobs.registry) collects them; the worker, the scheduler, the HTTP
API, the CLI, the OpenAPI document and docs/jobs.md all read the specs, so a job type is
described in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pydantic import BaseModel

from optimizer.jobs.context import Handler


@dataclass(frozen=True)
class Schedule:
    """A job type the scheduler enqueues on a cron: `cron_setting` names the Settings field
    that holds the expression; a tick that fires later than `misfire_grace_seconds` is
    skipped (the next one does the work)."""

    cron_setting: str
    misfire_grace_seconds: int


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing job of this type runs. None: the service's MAX_ATTEMPTS."""

    max_attempts: int | None = None


@dataclass(frozen=True)
class JobSpec:
    name: str
    summary: str  # one line, shown in `prompt-worker jobs types`, the OpenAPI document, docs
    payload: type[BaseModel]  # validated when the job is enqueued and again when it runs
    handler: Handler
    schedule: Schedule | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
