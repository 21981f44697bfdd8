"""full_cycle: the whole loop for one prompt in one job, for admins.

Steps, each reported as `current_step` with progress in its share of 0-100:
analysis (0-25) -> generation (25-55) -> replay (55-80) -> creation (80-90) -> monitoring
(90-100). Nothing is chained through the queue: the job does each step itself. Generation,
replay and creation are skipped, with the reason in the result, while the prompt already has
a live experiment (its candidates would wait for it anyway), when there is nothing
actionable to fix, or when no LLM is usable (no ANTHROPIC_API_KEY with the anthropic
provider: the reason is in the result, and /health and `status` report the problem).
Replay is skipped when REPLAY_ENABLED is false (creation then takes the first
MAX_LIVE_CANDIDATES candidates); creation is skipped when no candidate passes replay.
A retry after a crash repeats analysis (its writes are upserts), reuses variants an earlier
attempt stored (no second LLM call) and the evaluations it stored (no second judgement), and
finds the experiment it started still running.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from pydantic import Field
from sqlalchemy import func, select

from models.insights import PatternInsight
from models.prompts import Prompt
from optimizer.errors import PermanentJobError
from optimizer.experiments.validation import MAX_VARIANTS
from optimizer.input_models import InputModel
from optimizer.jobs import candidate_replay, creation, monitoring, variant_generation
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.pattern_analysis import analyze_prompt
from optimizer.jobs.payload_fields import PromptName, Scope
from optimizer.jobs.spec import JobSpec, job_payload
from optimizer.jobs.variant_generation import (
    DEFAULT_MODEL,
    DEFAULT_N,
    ModelChoice,
    VariantCount,
    VariantGenerationPayload,
)
from optimizer.problems import llm_problem
from optimizer.variants import store


class FullCyclePayload(InputModel):
    prompt: PromptName = Field(description="the name of the prompt to work on")
    model: ModelChoice = DEFAULT_MODEL
    n: VariantCount = DEFAULT_N
    always_generate: bool = Field(
        default=False,
        description="ask for variants even when the prompt has no actionable insights",
    )
    scope: Scope = None

    def generation(self) -> VariantGenerationPayload:
        return VariantGenerationPayload(prompt=self.prompt, model=self.model, n=self.n)


def _step(job: ActiveJob, low: int, high: int, name: str) -> ActiveJob:
    """The job as a step sees it: its progress 0-100 lands in [low, high] of the whole, and
    its message is prefixed with the step's name."""

    async def report(percent: int, message: str | None) -> None:
        scaled = low + (high - low) * max(0, min(100, percent)) // 100
        await job.report_progress(scaled, f"{name}: {message}" if message else name)

    return dataclasses.replace(job, report_progress=report)


def _state(ctx: ServiceContext, name: str) -> tuple[tuple[int, str] | None, int]:
    """The prompt's live experiment (id, status) if any, and its number of actionable
    insights."""
    with ctx.sessions() as session:
        prompt_id = session.scalar(select(Prompt.id).where(Prompt.name == name))
        if prompt_id is None:
            raise PermanentJobError(f"prompt {name!r} does not exist")
        actionable = (
            session.scalar(
                select(func.count())
                .select_from(PatternInsight)
                .where(
                    PatternInsight.prompt_id == prompt_id, PatternInsight.is_actionable.is_(True)
                )
            )
            or 0
        )
        return store.live_experiment(session, prompt_id), int(actionable)


async def run_full_cycle(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    spec = job_payload(FullCyclePayload, job)
    name = spec.prompt
    await asyncio.to_thread(_state, ctx, name)  # an unknown prompt fails before any work
    result: dict[str, Any] = {"prompt": name}
    analysing = _step(job, 0, 25, "analysis")
    await analysing.report_progress(0, "analysing conversations")
    analysis = await analyze_prompt(ctx, analysing, name, chain=False)
    ctx.stats.add("patternsAnalyzed")
    await analysing.report_progress(100, f"{analysis['actionable']} actionable finding(s)")
    result["analysis"] = {
        **analysis,
        "message": (
            f"{analysis['actionable']} actionable of {analysis['tests']} tests, "
            f"{analysis['new']} new"
        ),
    }
    live, actionable = await asyncio.to_thread(_state, ctx, name)
    result.update(await _generate_and_create(ctx, job, spec, live, actionable))
    live, _ = await asyncio.to_thread(_state, ctx, name)
    result["monitoring"] = await _monitor(ctx, _step(job, 90, 100, "monitoring"), live)
    result["message"] = "; ".join(
        f"{step}: {result[step]['message']}" for step in STEPS if result[step].get("message")
    )
    await job.report_progress(100, "done")
    return result


STEPS = ("analysis", "generation", "replay", "creation", "monitoring")


def _all_skipped(why: str, later: str | None = None) -> dict[str, dict[str, Any]]:
    """Generation skipped for `why`; replay and creation for `later` (default the same)."""
    return {
        "generation": _skipped(why),
        "replay": _skipped(later or why),
        "creation": _skipped(later or why),
    }


async def _generate_and_create(
    ctx: ServiceContext,
    job: ActiveJob,
    spec: FullCyclePayload,
    live: tuple[int, str] | None,
    actionable: int,
) -> dict[str, dict[str, Any]]:
    if live is not None:
        return _all_skipped(
            f"skipped: prompt {spec.prompt!r} has experiment {live[0]} {live[1]}; "
            "new variants would wait for it"
        )
    if actionable == 0 and not spec.always_generate:
        return _all_skipped(
            "skipped: no actionable insights for this prompt (set always_generate to "
            "ask for variants anyway)",
            "skipped: no new variants",
        )
    if (problem := llm_problem(ctx.settings)) is not None:
        # Analysis and monitoring still run; only the steps that need the LLM wait.
        return _all_skipped(f"skipped: {problem}")
    generated = await variant_generation.run_generation(
        ctx, _step(job, 25, 55, "generation"), spec.generation(), chain=False
    )
    versions = [item["version"] for item in generated["stored"]]
    replayed, live_versions = await _replay(ctx, _step(job, 55, 80, "replay"), spec, versions)
    if not live_versions:
        return {
            "generation": generated,
            "replay": replayed,
            "creation": _skipped("skipped: no candidate passed replay"),
        }
    creator = _step(job, 80, 90, "creation")
    created = await creation.create_experiment_job(
        ctx,
        dataclasses.replace(creator, payload={"prompt": spec.prompt, "variants": live_versions}),
    )
    return {"generation": generated, "replay": replayed, "creation": created}


async def _replay(
    ctx: ServiceContext, job: ActiveJob, spec: FullCyclePayload, versions: list[int]
) -> tuple[dict[str, Any], list[int]]:
    """The replay step's result and the versions that go live, best first."""
    if not ctx.settings.replay_enabled:
        live = versions[: ctx.settings.max_live_candidates]
        return _skipped(
            "skipped: REPLAY_ENABLED is false; the first "
            f"{len(live)} candidate(s) go live untested (MAX_LIVE_CANDIDATES)"
        ), live
    replayed = await candidate_replay.run_replay(
        ctx, job, spec.prompt, versions[:MAX_VARIANTS], chain=False
    )
    return {"skipped": False, **replayed}, list(replayed["live"])


async def _monitor(
    ctx: ServiceContext, job: ActiveJob, live: tuple[int, str] | None
) -> dict[str, Any]:
    if live is None or live[1] != "running":
        await job.report_progress(100, "no running experiment")
        return _skipped("skipped: the prompt has no running experiment")
    await job.report_progress(10, f"checking experiment {live[0]}")
    outcome = await monitoring.check_one(ctx, live[0], job.id)
    await job.report_progress(100, f"experiment {live[0]} checked")
    if outcome is None:
        return _skipped(f"experiment {live[0]} ended meanwhile")
    decision = outcome.to_dict()
    return {
        "skipped": False,
        "decision": decision,
        "message": f"experiment {live[0]}: {decision['decision']}",
    }


def _skipped(why: str) -> dict[str, Any]:
    return {"skipped": True, "message": why}


SPEC = JobSpec(
    name="full_cycle",
    summary="analysis, variant generation, replay, experiment creation and a first check "
    "for one prompt, in one job",
    payload=FullCyclePayload,
    handler=run_full_cycle,
)
