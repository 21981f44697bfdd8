"""Every job type, by name: the specs of the job type modules. The worker, the scheduler,
the HTTP API, the CLI and docs/jobs.md read them from here.

Adding a job type: a module in this package defining SPEC, its entry in _SPECS below,
and its test (see docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from optimizer.config import Settings
from optimizer.input_models import InputModel
from optimizer.jobs import (
    candidate_replay,
    creation,
    full_cycle,
    monitoring,
    pattern_analysis,
    variant_generation,
)
from optimizer.jobs.context import Handler
from optimizer.jobs.spec import JobSpec, checked_payload

# In the order of the loop: messages and docs list the types this way.
_SPECS = (
    pattern_analysis.SPEC,
    variant_generation.SPEC,
    candidate_replay.SPEC,
    creation.SPEC,
    monitoring.SPEC,
    full_cycle.SPEC,
)
SPECS: Mapping[str, JobSpec] = MappingProxyType({spec.name: spec for spec in _SPECS})
JOB_TYPES: tuple[str, ...] = tuple(SPECS)
if len(SPECS) != len(_SPECS):
    raise RuntimeError("two job type modules define the same job type name")


def default_handlers() -> dict[str, Handler]:
    return {name: spec.handler for name, spec in SPECS.items()}


def check_payload(job_type: str, payload: Any) -> InputModel:
    """The payload of a new job of a known type, checked: InvalidInput names the field
    (`payload.n`)."""
    return checked_payload(SPECS[job_type].payload, payload)


def max_attempts(job_type: str, settings: Settings) -> int:
    return SPECS[job_type].retry.attempts(settings.max_attempts)
