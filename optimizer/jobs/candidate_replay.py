"""candidate_replay: replay a prompt's candidates on logged conversations of its active
version, have a judge compare each candidate's answers with the active version's in both
orders, and let only the candidates that win go live (docs/candidates.md, "Replay and the
pairwise judge").

Per candidate: a failing sample and a held-out sample (optimizer.replay.sampling), each
conversation replayed under both prompts and judged twice (optimizer.replay.evaluate), one
candidate_evaluations row written as soon as a conversation is judged. The active version's
answers are replayed once per conversation and reused for every candidate. Then the gate
(optimizer.replay.gate): rejected candidates are marked `rejected` with the figures as the
reason, and with `chain` an experiment_creation job is queued for the passing ones, best
first, at most MAX_LIVE_CANDIDATES.

LLM errors and JobDeferred (the hourly call limit or the daily budget) are not caught: the
worker retries or re-queues the job, and the retry skips the conversations already judged.

Result: {"prompt", "control_version", "candidates": [{"version", "passed", "live", "reason",
"failing", "holdout" (win rates), "scope", "judged", "reused", "unusable": {"failing",
"holdout"}}], "passed", "live", "rejected", "skipped_versions": [{"version", "reason"}],
"llm_calls", "input_tokens", "output_tokens", "cost_usd", "experiment_creation_job_id",
"experiment_creation_note", "message"}.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pydantic import Field

from optimizer.errors import PermanentJobError
from optimizer.experiments.validation import MAX_VARIANTS, Variants
from optimizer.input_models import InputModel
from optimizer.jobs import creation
from optimizer.jobs.chain import Chained, enqueue_next
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.payload_fields import PromptName, Scope
from optimizer.jobs.spec import JobSpec, job_payload
from optimizer.replay import gate, store
from optimizer.replay.evaluate import Replayer
from optimizer.replay.plan import Plan, Progress, Run, Sizes, prepare
from optimizer.variants.store import live_experiment

log = logging.getLogger("prompt_worker.jobs.candidate_replay")


class CandidateReplayPayload(InputModel):
    prompt: PromptName = Field(description="the prompt whose candidates are replayed")
    versions: Variants = Field(
        description=f"1 to {MAX_VARIANTS} distinct version numbers, each a candidate of the "
        "prompt, replayed against its active version"
    )
    chain: bool = Field(
        default=True,
        description="queue experiment_creation for the candidates that pass (best first, "
        "at most MAX_LIVE_CANDIDATES)",
    )
    scope: Scope = None


NOT_CHAINED = Chained(None, "no experiment_creation job queued: the caller starts it itself")


async def replay_candidates(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    payload = job_payload(CandidateReplayPayload, job)
    return await run_replay(ctx, job, payload.prompt, list(payload.versions), chain=payload.chain)


async def run_replay(
    ctx: ServiceContext, job: ActiveJob, prompt: str, versions: list[int], *, chain: bool = True
) -> dict[str, Any]:
    """Replay, judge and gate the versions; with `chain`, queue experiment_creation for the
    ones that go live (full_cycle passes False and starts the experiment itself)."""
    if ctx.llm is None:
        raise PermanentJobError(
            "no LLM client is configured in this worker; set ANTHROPIC_API_KEY (or "
            "LLM_PROVIDER=offline for the demo)"
        )
    await job.report_progress(2, "choosing the conversations to replay")
    settings = ctx.settings
    sizes = Sizes(settings.replay_failing_sample, settings.replay_holdout_sample)
    inputs, plans = await asyncio.to_thread(prepare, ctx.sessions, prompt, versions, sizes)
    replayer = Replayer(
        ctx.llm, settings.replay_model, settings.judge_model, settings.replay_max_turns, job.id
    )
    run = Run(
        ctx.sessions, inputs, replayer, Progress(job.report_progress, sum(p.todo for p in plans))
    )
    figures = [await run.evaluate(plan) for plan in plans]
    decisions = gate.decide(figures, max_live=settings.max_live_candidates)
    await job.report_progress(96, "applying the gate")
    await asyncio.to_thread(_reject, ctx, plans, decisions)
    live = [d.version for d in decisions if d.live]
    chained = await asyncio.to_thread(_chain, ctx, job, inputs, live) if chain else NOT_CHAINED
    _log(job, inputs, decisions)
    await job.report_progress(100, f"{len(live)} of {len(plans)} candidate(s) pass")
    return _result(inputs, plans, decisions, chained, run)


def _reject(ctx: ServiceContext, plans: list[Plan], decisions: list[gate.GateDecision]) -> None:
    ids = {plan.candidate.version: plan.candidate.id for plan in plans}
    with ctx.sessions.begin() as session:
        for decision in decisions:
            if not decision.passed:
                store.mark_rejected(session, ids[decision.version], decision.reason)


def _chain(
    ctx: ServiceContext, job: ActiveJob, inputs: store.ReplayInputs, live: list[int]
) -> Chained:
    name = inputs.prompt
    if not live:
        return Chained(None, "no candidate passed replay, so no experiment is started")
    with ctx.sessions() as session:
        running = live_experiment(session, inputs.prompt_id)
    if running is not None:
        return Chained(
            None,
            f"not started: prompt {name!r} has experiment {running[0]} {running[1]}; the "
            "candidates that passed wait until it ends",
        )
    job_id, created = enqueue_next(
        ctx,
        creation.SPEC,
        {"prompt": name, "variants": live},
        dedupe_key=f"experiment_creation:{name}:after-replay-{job.id}",
    )
    versions = ", ".join(map(str, live))
    note = (
        f"experiment_creation job {job_id} queued for versions {versions}"
        if created
        else f"experiment_creation job {job_id} was already queued by this job"
    )
    return Chained(job_id, note, creation.SPEC.name)


def _log(job: ActiveJob, inputs: store.ReplayInputs, decisions: list[gate.GateDecision]) -> None:
    for decision in decisions:
        log.info(
            "candidate replayed",
            extra={
                "job_id": job.id,
                "prompt": inputs.prompt,
                "version": decision.version,
                "passed": decision.passed,
                "live": decision.live,
                "failing_rate": decision.failing.rate,
                "holdout_rate": decision.holdout.rate,
            },
        )


def _result(
    inputs: store.ReplayInputs,
    plans: list[Plan],
    decisions: list[gate.GateDecision],
    chained: Chained,
    run: Run,
) -> dict[str, Any]:
    by_version = {plan.candidate.version: plan for plan in plans}
    spent = run.spent
    rejected = [d for d in decisions if not d.passed]
    return {
        "prompt": inputs.prompt,
        "control_version": inputs.control.version,
        "candidates": [
            {**d.to_dict(), **by_version[d.version].to_dict(run.judged[d.version])}
            for d in decisions
        ],
        "passed": [d.version for d in decisions if d.passed],
        "live": [d.version for d in decisions if d.live],
        "rejected": [d.version for d in rejected],
        # Not "skipped": full_cycle's steps use that key for "this step did not run".
        "skipped_versions": [{"version": v, "reason": why} for v, why in inputs.skipped],
        "llm_calls": spent.calls,
        "input_tokens": spent.input_tokens,
        "output_tokens": spent.output_tokens,
        "cost_usd": round(spent.cost_usd, 6),
        "experiment_creation_job_id": chained.job_id,
        "experiment_creation_note": chained.note,
        "message": _message(inputs, decisions, chained),
    }


def _message(
    inputs: store.ReplayInputs, decisions: list[gate.GateDecision], chained: Chained
) -> str:
    skipped = "".join(f"; skipped: {why}" for _, why in inputs.skipped)
    if not decisions:
        return f"nothing replayed for prompt {inputs.prompt!r}{skipped}"
    live = [f"v{d.version}" for d in decisions if d.live]
    held = [f"v{d.version}" for d in decisions if d.passed and not d.live]
    lines = [
        f"replayed {len(decisions)} candidate(s) of {inputs.prompt!r} against version "
        f"{inputs.control.version}: live {', '.join(live) or 'none'}"
        + (f", passed but held back {', '.join(held)}" if held else "")
    ]
    lines += [f"v{d.version} {d.reason}" for d in decisions if not d.passed]
    return "; ".join([*lines, chained.note]) + skipped


SPEC = JobSpec(
    name="candidate_replay",
    summary="replay candidates on logged conversations, judge them against the active "
    "version in both orders, and queue experiment_creation for those that win",
    payload=CandidateReplayPayload,
    handler=replay_candidates,
)
