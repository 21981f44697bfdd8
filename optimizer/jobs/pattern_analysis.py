"""pattern_analysis: find where each prompt's active version does badly, store the findings
as insights, and queue variant generation when something new is worth acting on.

Payload: {} analyses every prompt whose active version has conversations in the last 24
whole hours (before the hour the run's now falls in: see aggregate.Bounds). That is a fixed
rule rather than "newer than the last analysis" because nothing records an analysis that
found nothing, and an hourly schedule over a 24-hour window re-checks every finding each
hour, which is what keeps last_seen_at and occurrences meaningful. {"prompt": NAME}
analyses that prompt only.

A run first brings the pattern rollup up to date (optimizer.patterns.rollup, its own short
transaction), then reads it.

Findings about the same conversations are stored as one insight (optimizer.patterns.
grouping): a bad segment whose conversations all carry one tag is one insight with its
segment and tag, metrics and windows as facets, not eight.

Per prompt the result holds: conversations and units per window, tests, significant,
actionable (findings), actionable_insights (the insights they make), untested_metrics
(each metric no conversation reports, with the reason), new, updated, themes, llm_themes,
tags, insight_ids, variant_generation_job_id and chain_note.
No variant_generation job is queued when no LLM is usable (the default provider without
ANTHROPIC_API_KEY): chain_note says so, and /health and `status` report the problem.
One prompt's failure does not stop the others; only when every prompt fails does the job
fail.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import Field
from sqlalchemy.orm import Session

from optimizer.clock import iso
from optimizer.db import read_only, session_factory
from optimizer.errors import PromptWorkerError, describe
from optimizer.input_models import InputModel
from optimizer.jobs import variant_generation
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.payload_fields import PromptName, Scope
from optimizer.jobs.spec import JobSpec, Schedule, job_payload
from optimizer.patterns import aggregate, llm_themes, store
from optimizer.patterns import drafts as drafts_of
from optimizer.patterns.aggregate import Bounds
from optimizer.patterns.describe import InsightDraft, theme_draft
from optimizer.patterns.rollup import roll_up_patterns
from optimizer.patterns.segments import (
    Finding,
    Rules,
    build_tests,
    evaluate,
    untested_metrics,
)
from optimizer.patterns.themes import ThemeResult, containing, failure_terms
from optimizer.problems import llm_problem
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob

log = logging.getLogger("prompt_worker.jobs.pattern_analysis")
MAX_CHAINED_INSIGHTS = 10  # what one variant-generation request can address well


class PatternAnalysisPayload(InputModel):
    prompt: PromptName | None = Field(
        default=None,
        description="analyse this prompt only; without it, every prompt whose active version "
        "has conversations in the last 24 hours",
    )
    scope: Scope = None


@dataclass(frozen=True)
class Analysis:
    findings: list[Finding]
    drafts: list[InsightDraft]
    themes: ThemeResult
    failed: list[tuple[int, str]]
    llm_refreshed_at: datetime | None
    conversations: dict[str, int]
    units: dict[str, int]
    untested: dict[str, str]


def _rules(ctx: ServiceContext) -> Rules:
    s = ctx.settings
    return Rules(
        fdr=s.insight_fdr,
        min_effect=s.insight_min_effect,
        min_conversations=s.insight_min_conversations,
    )


def _roll_up(ctx: ServiceContext, now: datetime) -> str:
    """Brings the pattern rollup up to date; its note on the tags."""
    with ctx.sessions.begin() as session:
        return roll_up_patterns(session, now).tags


def _reader(ctx: ServiceContext) -> Session:
    """A read-only session; on PostgreSQL one snapshot for all its statements, so the
    totals, segments and tags agree even while another replica's rollup pass commits."""
    engine = read_only(ctx.engine)
    if engine.dialect.name == "postgresql":
        engine = engine.execution_options(isolation_level="REPEATABLE READ")
    return session_factory(engine)()


def _analyse(ctx: ServiceContext, target: store.Target, now: datetime) -> Analysis:
    """Everything that reads: one read-only transaction (no write lock on SQLite)."""
    rules, bounds = _rules(ctx), Bounds(now)
    with _reader(ctx) as session:
        conn = session.connection()
        sums = aggregate.segment_sums(conn, target.version_id, bounds)
        tags = aggregate.tag_sums(conn, target.version_id, bounds)
        findings = evaluate(build_tests([*sums.segments, *tags], sums.totals), rules)
        found = drafts_of.groups(conn, target.version_id, bounds, sums, tags, findings)
        failed = aggregate.transcripts(conn, target.version_id, bounds, success=False)
        succeeded = aggregate.transcripts(conn, target.version_id, bounds, success=True)
        drafts = drafts_of.group_drafts(
            conn, target.version_id, bounds, found, findings, rules, with_transcripts=bool(failed)
        )
        refreshed = store.llm_themes_refreshed_at(session, target)
    themes = failure_terms([t for _, t in failed], [t for _, t in succeeded])
    if themes.terms:
        ids = containing(failed, [t.term for t in themes.terms[:3]], aggregate.SAMPLE_IDS)
        drafts.append(
            theme_draft(
                themes,
                version_id=target.version_id,
                window_start=bounds.since_7d,
                window_end=bounds.until,
                sample_ids=ids,
            )
        )
    windows = [sums.totals.window(w) for w in ("24h", "7d")]
    return Analysis(
        findings,
        drafts,
        themes,
        failed,
        refreshed,
        {"24h": windows[0].conversations, "7d": windows[1].conversations},
        {"24h": windows[0].units, "7d": windows[1].units},
        untested_metrics(sums.totals),
    )


@dataclass(frozen=True)
class Chained:
    job_id: int | None
    note: str


def _save(
    ctx: ServiceContext, target: store.Target, drafts: list[InsightDraft], now: datetime
) -> list[store.Saved]:
    with ctx.sessions.begin() as session:
        return store.save_insights(session, target, drafts, now=now)


def _chain(
    ctx: ServiceContext, job: ActiveJob, target: store.Target, insight_ids: list[int], now: datetime
) -> Chained:
    name = target.name
    if not insight_ids:
        return Chained(None, "not queued: no new actionable insights")
    if (problem := llm_problem(ctx.settings)) is not None:
        # The job could only fail; /health and `status` report the problem instead.
        return Chained(None, f"not queued: {problem}")
    with ctx.sessions() as session:
        live = store.live_experiment(session, target.prompt_id)
        waiting = store.queued_generation(session, name)
    if live is not None:
        return Chained(
            None,
            f"not queued: prompt {name!r} has experiment {live[0]} "
            f"{live[1]}; new variants wait until it ends",
        )
    if waiting is not None:
        return Chained(
            None,
            f"not queued: variant_generation job {waiting} for prompt "
            f"{name!r} is already pending or running",
        )
    next_step = variant_generation.SPEC
    queued, created = queue.enqueue(
        ctx.engine,
        NewJob(type=next_step.name, payload={"prompt": name, "insight_ids": insight_ids}),
        max_attempts=next_step.retry.attempts(ctx.settings.max_attempts),
        now=now,
        dedupe_key=f"variant_generation:{name}:after-analysis-{job.id}",
    )
    if not created:
        return Chained(
            queued.id, f"variant_generation job {queued.id} was already queued by this job"
        )
    return Chained(
        queued.id,
        f"variant_generation job {queued.id} queued for insights "
        f"{', '.join(map(str, insight_ids))}",
    )


def _load_target(ctx: ServiceContext, name: str) -> store.Target:
    with ctx.sessions() as session:
        return store.target_named(session, name)


async def analyze_prompt(
    ctx: ServiceContext, job: ActiveJob, name: str, *, chain: bool = True
) -> dict[str, Any]:
    """Analyse one prompt (a full_cycle job calls this with chain=False and queues the next
    step itself). Does not add to patternsAnalyzed: the caller counts its run once."""
    target = await asyncio.to_thread(_load_target, ctx, name)
    tags_note = await asyncio.to_thread(_roll_up, ctx, ctx.clock())
    return await _analyse_target(ctx, job, target, tags_note, chain=chain)


async def _analyse_target(
    ctx: ServiceContext, job: ActiveJob, target: store.Target, tags_note: str, *, chain: bool
) -> dict[str, Any]:
    """Analyse one prompt from the rollup as the caller's pass left it (`tags_note`: the
    pass's note on the tags)."""
    now = ctx.clock()
    bounds = Bounds(now)
    analysis = await asyncio.to_thread(_analyse, ctx, target, now)
    named = await llm_themes.name_themes(
        ctx.settings,
        ctx.llm,
        analysis.failed,
        refreshed_at=analysis.llm_refreshed_at,
        now=now,
        job_id=job.id,
    )
    drafts = list(analysis.drafts)
    if named.status == "ok":
        drafts.append(
            llm_themes.draft(
                named,
                version_id=target.version_id,
                window_start=bounds.since_7d,
                window_end=bounds.until,
            )
        )
    saved = await asyncio.to_thread(_save, ctx, target, drafts, now)
    fresh = sorted(
        (s for s in saved if s.newly_actionable), key=lambda s: (-abs(s.effect_size or 0.0), s.id)
    )
    fresh_ids = [s.id for s in fresh][:MAX_CHAINED_INSIGHTS]
    if chain:
        chained = await asyncio.to_thread(_chain, ctx, job, target, fresh_ids, now)
    else:
        chained = Chained(None, "not queued: chaining is left to the caller")
    findings = analysis.findings
    log.info(
        "patterns analysed",
        extra={
            "job_id": job.id,
            "prompt": target.name,
            "tests": len(findings),
            "actionable": sum(f.actionable for f in findings),
            "actionable_insights": sum(s.is_actionable for s in saved),
            "new": sum(s.created for s in saved),
            "llm_themes": named.status,
            "variant_generation_job_id": chained.job_id,
        },
    )
    return {
        "prompt": target.name,
        "version": target.version,
        "window_end": iso(bounds.until),
        "conversations_24h": analysis.conversations.get("24h", 0),
        "conversations_7d": analysis.conversations.get("7d", 0),
        "units_24h": analysis.units.get("24h", 0),
        "units_7d": analysis.units.get("7d", 0),
        "tests": sum(1 for f in findings if f.q_value is not None),
        "significant": sum(f.significant for f in findings),
        "actionable": sum(f.actionable for f in findings),
        "actionable_insights": sum(s.is_actionable for s in saved),
        "untested_metrics": analysis.untested,
        "new": sum(s.created for s in saved),
        "updated": sum(not s.created for s in saved),
        "themes": len(analysis.themes.terms),
        "theme_terms": [t.term for t in analysis.themes.terms],
        "themes_note": analysis.themes.skipped,
        "llm_themes": named.summary(),
        "tags": tags_note,
        "insight_ids": [s.id for s in saved],
        "new_actionable_insight_ids": [s.id for s in fresh],
        "variant_generation_job_id": chained.job_id,
        "chain_note": chained.note,
    }


def _recent(ctx: ServiceContext, now: datetime) -> list[store.Target]:
    bounds = Bounds(now)
    with ctx.sessions() as session:
        return store.recent_targets(session, bounds.since_24h, bounds.until)


async def analyze_patterns(ctx: ServiceContext, job: ActiveJob) -> dict[str, Any]:
    name = job_payload(PatternAnalysisPayload, job).prompt
    await job.report_progress(5, "finding prompts to analyse")
    if name is not None:
        results = [await analyze_prompt(ctx, job, name)]
        errors: list[dict[str, Any]] = []
    else:
        tags_note = await asyncio.to_thread(_roll_up, ctx, ctx.clock())
        targets = await asyncio.to_thread(_recent, ctx, ctx.clock())
        results, errors = [], []
        for done, target in enumerate(targets, start=1):
            try:
                results.append(await _analyse_target(ctx, job, target, tags_note, chain=True))
            except Exception as exc:  # one prompt's failure must not hide the others
                log.error(
                    "pattern analysis failed",
                    exc_info=exc,
                    extra={"job_id": job.id, "prompt": target.name},
                )
                errors.append({"prompt": target.name, "error": describe(exc)})
            await job.report_progress(
                5 + 95 * done // len(targets), f"analysed {done} of {len(targets)} prompts"
            )
        if errors and not results:
            raise PromptWorkerError(
                f"pattern analysis failed for all {len(errors)} prompts; "
                f"first: {errors[0]['prompt']}: {errors[0]['error']}"
            )
    ctx.stats.add("patternsAnalyzed", 1)
    await job.report_progress(100, f"analysed {len(results)} prompt(s)")
    return {"prompts": results, "errors": errors, "message": _summary(results, errors)}


def _summary(results: list[dict[str, Any]], errors: list[dict[str, Any]]) -> str:
    if not results and not errors:
        return "no prompt has conversations of its active version in the last 24 h"
    parts = [
        f"{r['prompt']}: {r['actionable']} actionable of {r['tests']} tests in "
        f"{r['actionable_insights']} actionable insight(s), {r['new']} new"
        for r in results
    ]
    parts += [f"{e['prompt']}: failed" for e in errors]
    return "; ".join(parts)


SPEC = JobSpec(
    name="pattern_analysis",
    summary="find where each prompt's active version does badly and store the findings as "
    "insights; queue variant_generation for new actionable ones",
    payload=PatternAnalysisPayload,
    handler=analyze_patterns,
    schedule=Schedule(cron_setting="pattern_analysis_cron", misfire_grace_seconds=900),
)
