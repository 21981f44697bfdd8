"""Which handler runs which job type."""

from __future__ import annotations

from models.jobs import JOB_TYPES
from optimizer.jobs.context import Handler
from optimizer.jobs.creation import create_experiment_job
from optimizer.jobs.monitoring import monitor_experiments


def default_handlers() -> dict[str, Handler]:
    handlers: dict[str, Handler] = {
        "experiment_creation": create_experiment_job,
        "experiment_monitoring": monitor_experiments,
    }
    unknown = set(handlers) - set(JOB_TYPES)
    if unknown:
        raise RuntimeError(f"handlers registered for unknown job types: {sorted(unknown)}")
    return handlers
