"""Which handler runs which job type."""

from __future__ import annotations

from models.jobs import JOB_TYPES
from optimizer.jobs.context import Handler
from optimizer.jobs.creation import create_experiment_job
from optimizer.jobs.full_cycle import run_full_cycle
from optimizer.jobs.monitoring import monitor_experiments
from optimizer.jobs.pattern_analysis import analyze_patterns
from optimizer.jobs.variant_generation import generate_variants


def default_handlers() -> dict[str, Handler]:
    handlers: dict[str, Handler] = {
        "pattern_analysis": analyze_patterns,
        "variant_generation": generate_variants,
        "experiment_creation": create_experiment_job,
        "experiment_monitoring": monitor_experiments,
        "full_cycle": run_full_cycle,
    }
    if set(handlers) != set(JOB_TYPES):
        differ = sorted(set(handlers) ^ set(JOB_TYPES))
        raise RuntimeError(f"handlers and job types differ: {differ}")
    return handlers
