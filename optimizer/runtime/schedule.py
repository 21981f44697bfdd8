"""Cron ticks that only enqueue, plus the reaper and retention pruning.

APScheduler keeps no shared state here (its job stores cannot be shared between
processes). Each tick inserts a job whose dedupe key names the type, the scope and the
tick's scheduled fire time, so any number of replicas make exactly one job per tick.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy.exc import SQLAlchemyError

from optimizer import retention
from optimizer.clock import iso
from optimizer.errors import describe
from optimizer.jobs.context import ServiceContext
from optimizer.jobs.registry import SPECS
from optimizer.jobs.spec import JobSpec, Schedule
from optimizer.runtime import queue
from optimizer.runtime.backoff import retry
from optimizer.runtime.queue import NewJob

log = logging.getLogger("prompt_worker.schedule")

GLOBAL_SCOPE = "all"
PRUNE_INTERVAL_HOURS = 1


def cron_trigger(expression: str) -> CronTrigger:
    return CronTrigger.from_crontab(expression, timezone="UTC")


def latest_fire_time(trigger: CronTrigger, now: datetime, lookback: timedelta) -> datetime | None:
    """The last time at or before `now` that `trigger` fires, looking back `lookback`.

    APScheduler does not hand the scheduled time to the job, and `now` differs between
    replicas; the scheduled time does not, so it goes into the dedupe key."""
    fire = trigger.get_next_fire_time(None, now - lookback)
    latest = None
    while fire is not None and fire <= now:
        latest = fire
        fire = trigger.get_next_fire_time(fire, fire + timedelta(microseconds=1))
    return latest


def scheduled(spec: JobSpec) -> Schedule:
    if spec.schedule is None:
        raise ValueError(f"job type {spec.name!r} is not scheduled")
    return spec.schedule


def tick_dedupe_key(job_type: str, scope: str, fire_time: datetime) -> str:
    return f"{job_type}:{scope}:{iso(fire_time, 'seconds')}"


async def enqueue_tick(ctx: ServiceContext, job_type: str, trigger: CronTrigger) -> None:
    spec = SPECS[job_type]
    grace = scheduled(spec).misfire_grace_seconds
    max_attempts = spec.retry.attempts(ctx.settings.max_attempts)
    now = ctx.clock()
    fire_time = latest_fire_time(trigger, now, timedelta(seconds=grace))
    if fire_time is None:
        log.warning("tick outside its grace window; skipped", extra={"job_type": job_type})
        return
    key = tick_dedupe_key(job_type, GLOBAL_SCOPE, fire_time)
    # Only keys every handler accepts: pattern_analysis fails a payload with any other
    # field. The fire time is already in the dedupe key.
    job = NewJob(type=job_type, payload={"scope": GLOBAL_SCOPE})
    # Retry through a short database outage, but only while the tick is still current.
    try:
        created_job, created = await retry(
            lambda: asyncio.to_thread(
                queue.enqueue,
                ctx.engine,
                job,
                max_attempts=max_attempts,
                now=ctx.clock(),
                dedupe_key=key,
            ),
            on=SQLAlchemyError,
            base_seconds=1.0,
            cap_seconds=30.0,
            may_wait=lambda delay: (ctx.clock() - fire_time).total_seconds() + delay <= grace,
            on_retry=lambda exc, delay: log.warning(
                "tick enqueue failed; retrying",
                extra={"job_type": job_type, "error": describe(exc, 200), "retry_in": delay},
            ),
        )
    except SQLAlchemyError:
        log.error(
            "tick lost: database unavailable for its whole grace window",
            extra={"job_type": job_type, "dedupe_key": key},
        )
        return
    log.info(
        "tick enqueued" if created else "tick already enqueued by another replica",
        extra={"job_type": job_type, "dedupe_key": key, "job_id": created_job.id},
    )


async def reap(ctx: ServiceContext) -> None:
    try:
        result = await asyncio.to_thread(queue.reap_expired, ctx.engine, now=ctx.clock())
    except SQLAlchemyError as exc:
        log.warning("reaper skipped: database unavailable", extra={"error": describe(exc, 200)})
        return
    if result.requeued or result.failed or result.cancelled:
        log.warning(
            "expired leases reaped",
            extra={
                "requeued": result.requeued,
                "failed": result.failed,
                "cancelled": result.cancelled,
            },
        )


async def prune(ctx: ServiceContext) -> None:
    cutoff = ctx.clock() - timedelta(days=ctx.settings.job_retention_days)
    try:
        deleted = await asyncio.to_thread(queue.prune_finished, ctx.engine, older_than=cutoff)
    except SQLAlchemyError as exc:
        log.warning("pruning skipped: database unavailable", extra={"error": describe(exc, 200)})
        return
    if deleted:
        log.info("finished jobs pruned", extra={"deleted": deleted})


async def prune_conversations(ctx: ServiceContext) -> None:
    now = ctx.clock()
    settings = ctx.settings
    try:
        pruned = await asyncio.to_thread(
            retention.prune_conversations,
            ctx.engine,
            now=now,
            conversations_before=now - timedelta(days=settings.conversation_retention_days),
            transcripts_before=now - timedelta(days=settings.transcript_retention_days),
        )
    except SQLAlchemyError as exc:
        log.warning(
            "conversation retention skipped: database unavailable",
            extra={"error": describe(exc, 200)},
        )
        return
    if pruned.conversations or pruned.transcripts or pruned.pattern_hours:
        log.info(
            "old conversations pruned",
            extra={
                "deleted": pruned.conversations,
                "transcripts_erased": pruned.transcripts,
                "pattern_rollup_hours_deleted": pruned.pattern_hours,
            },
        )


def build_scheduler(ctx: ServiceContext) -> AsyncIOScheduler:
    settings = ctx.settings
    scheduler = AsyncIOScheduler(timezone="UTC")
    for spec in SPECS.values():
        if spec.schedule is None:
            continue
        trigger = cron_trigger(str(getattr(settings, spec.schedule.cron_setting)))
        # A tick that fires late (process paused, event loop busy) still runs within its
        # grace; later than that it is skipped, and the next tick does the work.
        # Coalescing turns a backlog of missed ticks into one.
        scheduler.add_job(
            enqueue_tick,
            trigger,
            args=[ctx, spec.name, trigger],
            id=f"tick:{spec.name}",
            misfire_grace_time=spec.schedule.misfire_grace_seconds,
            coalesce=True,
            max_instances=1,
        )
    scheduler.add_job(
        reap,
        "interval",
        args=[ctx],
        id="reaper",
        seconds=max(1.0, settings.lease_seconds / 2),
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
    )
    scheduler.add_job(
        prune,
        "interval",
        args=[ctx],
        id="prune",
        hours=PRUNE_INTERVAL_HOURS,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
        next_run_time=ctx.clock() + timedelta(seconds=30),
    )
    scheduler.add_job(
        prune_conversations,
        "interval",
        args=[ctx],
        id="conversation-retention",
        hours=PRUNE_INTERVAL_HOURS,
        coalesce=True,
        max_instances=1,
        misfire_grace_time=None,
        next_run_time=ctx.clock() + timedelta(seconds=60),
    )
    return scheduler
