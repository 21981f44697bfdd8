"""experiment_creation: start an experiment of a prompt's active version against candidates.

Without `variants` the prompt's newest candidates (up to three) are tested. Anything that a
retry cannot fix (no such prompt, no candidate, an experiment already running) fails the job
permanently with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import Field

from optimizer.errors import Conflict, InvalidInput, NotFound, PermanentJobError
from optimizer.experiments import store
from optimizer.experiments.defaults import settings_with_defaults
from optimizer.experiments.validation import (
    MAX_VARIANTS,
    ArmsInput,
    ExperimentSettingsInput,
    Variants,
)
from optimizer.input_models import InputModel
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.payload_fields import PromptName, Scope
from optimizer.jobs.spec import JobSpec, job_payload

log = logging.getLogger("prompt_worker.jobs.creation")


class _Prompt(InputModel):
    prompt: PromptName = Field(description="the prompt whose active version is the control")


# The last base's fields come first: prompt, then the arms, then the settings.
class ExperimentCreationPayload(ExperimentSettingsInput, ArmsInput, _Prompt):
    """The arms and settings of POST /experiments (the same models, so both refuse the same
    values with the same words), with `variants` optional."""

    variants: Variants | None = Field(  # type: ignore[assignment]  # optional here
        default=None,
        description=f"1 to {MAX_VARIANTS} distinct candidate version numbers; "
        "without it, the prompt's newest candidates, up to three",
    )
    scope: Scope = None


def _create(
    ctx: ServiceContext, job: ActiveJob, payload: ExperimentCreationPayload
) -> store.ExperimentView:
    settings = settings_with_defaults(payload, ctx.settings)
    with ctx.sessions.begin() as session:
        prompt, variants = payload.prompt, payload.variants
        if variants is None:
            variants = store.newest_candidates(session, prompt)
            if not variants:
                raise Conflict(
                    f"prompt {prompt!r} has no candidate versions to test; add "
                    f"one (POST /prompts/{prompt}/versions) or run "
                    "variant_generation first"
                )
            variants.sort()
        return store.create_experiment(
            session,
            prompt,
            variants,
            weights=payload.weights,
            settings=settings,
            created_by=f"job {job.id}",
            now=ctx.clock(),
        )


async def create_experiment_job(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    payload = job_payload(ExperimentCreationPayload, job)
    await job.report_progress(10, "choosing versions")
    try:
        view = await asyncio.to_thread(_create, ctx, job, payload)
    except (InvalidInput, Conflict, NotFound) as exc:
        raise PermanentJobError(f"cannot start an experiment: {exc}") from None
    ctx.stats.add("experimentsCreated")
    control = next(arm.version for arm in view.arms if arm.is_control)
    variants = [arm.version for arm in view.arms if not arm.is_control]
    log.info(
        "experiment created",
        extra={"experiment_id": view.id, "prompt": view.prompt, "job_id": job.id},
    )
    await job.report_progress(100, f"experiment {view.id} running")
    return {
        "experiment_id": view.id,
        "prompt": view.prompt,
        "control_version": control,
        "variant_versions": variants,
        "message": f"experiment {view.id} started: version {control} (control) against "
        f"{', '.join(map(str, variants))}",
    }


SPEC = JobSpec(
    name="experiment_creation",
    summary="start an experiment of a prompt's active version against candidate versions",
    payload=ExperimentCreationPayload,
    handler=create_experiment_job,
)
