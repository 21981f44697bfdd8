"""experiment_creation: start an experiment of a prompt's active version against candidates.

Payload: {"prompt": NAME, "variants"?: [version numbers], and optionally the same settings
POST /experiments takes}. Without `variants` the prompt's newest candidates (up to three)
are tested. Anything that a retry cannot fix (no such prompt, no candidate, an experiment
already running) fails the job permanently with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from optimizer.errors import Conflict, InvalidInput, NotFound, PermanentJobError
from optimizer.experiments import store
from optimizer.experiments.defaults import SETTING_FIELDS, settings_with_defaults
from optimizer.jobs.context import ActiveJob, ServiceContext

log = logging.getLogger("prompt_worker.jobs.creation")

# Keys the scheduler or an admin may add that this handler does not use.
IGNORED_KEYS = ("scope",)
PAYLOAD_KEYS = ("prompt", "variants", "weights", *SETTING_FIELDS, *IGNORED_KEYS)


def _create(ctx: ServiceContext, job: ActiveJob) -> store.ExperimentView:
    payload = job.payload
    for key in payload:
        if key not in PAYLOAD_KEYS:
            raise InvalidInput(f"unknown payload key {key!r}; allowed: "
                               f"{', '.join(PAYLOAD_KEYS)}", field=key)
    settings = settings_with_defaults(payload, ctx.settings)
    with ctx.sessions.begin() as session:
        prompt = payload.get("prompt")
        variants = payload.get("variants")
        if variants is None:
            variants = store.newest_candidates(session, prompt)
            if not variants:
                raise Conflict(f"prompt {prompt!r} has no candidate versions to test; add "
                               f"one (POST /prompts/{prompt}/versions) or run "
                               "variant_generation first")
            variants.sort()
        return store.create_experiment(session, prompt, variants,
                                       weights=payload.get("weights"), settings=settings,
                                       created_by=f"job {job.id}", now=ctx.clock())


async def create_experiment_job(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    await job.report_progress(10, "choosing versions")
    try:
        view = await asyncio.to_thread(_create, ctx, job)
    except (InvalidInput, Conflict, NotFound) as exc:
        raise PermanentJobError(f"cannot start an experiment: {exc}") from None
    ctx.stats.add("experimentsCreated")
    control = next(arm.version for arm in view.arms if arm.is_control)
    variants = [arm.version for arm in view.arms if not arm.is_control]
    log.info("experiment created", extra={"experiment_id": view.id, "prompt": view.prompt,
                                          "job_id": job.id})
    await job.report_progress(100, f"experiment {view.id} running")
    return {"experiment_id": view.id, "prompt": view.prompt, "control_version": control,
            "variant_versions": variants,
            "message": f"experiment {view.id} started: version {control} (control) against "
                       f"{', '.join(map(str, variants))}"}
