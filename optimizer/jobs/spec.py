"""What defines a job type: one `JobSpec` per type, in that type's own module.

The registry (optimizer.jobs.registry) collects them; the worker, the scheduler, the HTTP
API, the CLI, the OpenAPI document and docs/jobs.md all read the specs, so a job type is
described in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

from optimizer.errors import InvalidInput, PermanentJobError
from optimizer.input_models import InputModel, validate
from optimizer.jobs.context import ActiveJob, Handler

PAYLOAD = "payload"  # where a payload's fields are, in error messages: payload.n
Payload = TypeVar("Payload", bound=InputModel)


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

    def attempts(self, service_default: int) -> int:
        return self.max_attempts if self.max_attempts is not None else service_default


@dataclass(frozen=True)
class JobSpec:
    name: str
    summary: str  # one line, shown in the OpenAPI document and docs/jobs.md
    payload: type[InputModel]  # validated when the job is enqueued and again when it runs
    handler: Handler
    schedule: Schedule | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)


def checked_payload(model: type[Payload], payload: Any) -> Payload:
    """`payload` as `model`, or InvalidInput naming the field as `payload.<field>`."""
    return validate(model, payload, root=PAYLOAD)


def job_payload(model: type[Payload], job: ActiveJob) -> Payload:
    """The running job's payload as `model`. A row inserted by SQL that POST /jobs would
    have refused fails for good, with the message POST /jobs would have given."""
    try:
        return checked_payload(model, job.payload)
    except InvalidInput as exc:
        raise PermanentJobError(str(exc)) from None
