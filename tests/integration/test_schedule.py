"""Several replicas' schedulers firing the same ticks make exactly one job per tick."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from sqlalchemy import text

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import create_db_engine, session_factory
from optimizer.jobs.context import ServiceContext
from optimizer.jobs.registry import SPECS
from optimizer.jobs.spec import RetryPolicy
from optimizer.run_stats import RunStats
from optimizer.runtime import queue, schedule
from optimizer.runtime.schedule import build_scheduler, enqueue_tick, prune, reap


def replica(url: str) -> ServiceContext:
    engine = create_db_engine(url)
    return ServiceContext(
        settings=Settings(database_url=url),
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=utcnow,
    )


async def test_three_schedulers_same_ticks_one_job_each(engine):
    url = engine.url.render_as_string(hide_password=False)
    replicas = [replica(url) for _ in range(3)]
    fired = [0, 0, 0]
    schedulers = []
    every_second = CronTrigger(second="*", timezone="UTC")
    for i, ctx in enumerate(replicas):

        async def tick(ctx: ServiceContext = ctx, i: int = i) -> None:
            fired[i] += 1
            await enqueue_tick(ctx, "experiment_monitoring", every_second)

        sched = AsyncIOScheduler(timezone="UTC")
        sched.add_job(tick, every_second, misfire_grace_time=5, coalesce=True)
        schedulers.append(sched)
    for sched in schedulers:
        sched.start()
    await asyncio.sleep(3.5)
    for sched in schedulers:
        sched.shutdown(wait=False)
    await asyncio.sleep(0.5)  # let in-flight ticks land
    for ctx in replicas:
        ctx.engine.dispose()
    with engine.connect() as conn:
        keys = [
            r[0]
            for r in conn.execute(
                text(
                    "SELECT dedupe_key FROM optimization_jobs WHERE type = 'experiment_monitoring'"
                )
            )
        ]
    assert all(n >= 3 for n in fired), fired
    assert len(keys) == len(set(keys))
    assert len(keys) >= 3
    assert len(keys) <= min(fired) + 1  # one job per tick, not per replica


async def test_reaper_and_prune_jobs_act_on_the_queue(engine):
    url = engine.url.render_as_string(hide_password=False)
    ctx = replica(url)
    now = utcnow()
    stale, _ = queue.enqueue(
        engine, queue.NewJob("full_cycle"), max_attempts=3, now=now - timedelta(minutes=5)
    )
    old, _ = queue.enqueue(
        engine, queue.NewJob("full_cycle"), max_attempts=3, now=now - timedelta(days=30)
    )
    claimed = queue.claim(engine, "dead-worker", lease_seconds=1, now=now - timedelta(minutes=5))
    assert claimed is not None and claimed.id == old.id  # the older one first
    queue.complete(engine, claimed.lease, {}, now=now - timedelta(days=10))
    queue.claim(engine, "dead-worker", lease_seconds=1, now=now - timedelta(minutes=5))
    await reap(ctx)
    await prune(ctx)
    ctx.engine.dispose()
    assert queue.get_job(engine, stale.id).status == "pending"
    assert [j.id for j in queue.list_jobs(engine)] == [stale.id]


def test_scheduler_is_built_with_deliberate_misfire_and_coalesce_settings():
    ctx = ServiceContext(
        settings=Settings(),
        engine=None,
        sessions=None,  # type: ignore[arg-type]
        stats=RunStats(),
        clock=utcnow,
    )
    sched = build_scheduler(ctx)
    jobs = {job.id: job for job in sched.get_jobs()}
    assert set(jobs) == {
        "tick:pattern_analysis",
        "tick:experiment_monitoring",
        "reaper",
        "prune",
        "conversation-retention",
    }
    assert jobs["conversation-retention"].coalesce is True
    assert jobs["tick:experiment_monitoring"].coalesce is True
    assert jobs["tick:experiment_monitoring"].misfire_grace_time == 300
    assert jobs["tick:pattern_analysis"].misfire_grace_time == 900
    assert str(jobs["tick:pattern_analysis"].trigger) == (
        "cron[month='*', day='*', day_of_week='*', hour='*', minute='0']"
    )


def test_ticks_are_the_scheduled_job_specs_with_their_cron_setting_and_grace():
    settings = Settings(monitoring_cron="*/5 * * * *", pattern_analysis_cron="30 2 * * *")
    ctx = ServiceContext(
        settings=settings,
        engine=None,
        sessions=None,  # type: ignore[arg-type]
        stats=RunStats(),
        clock=utcnow,
    )
    jobs = {job.id: job for job in build_scheduler(ctx).get_jobs()}
    scheduled = [spec for spec in SPECS.values() if spec.schedule is not None]
    maintenance = {"reaper", "prune", "conversation-retention"}
    assert {f"tick:{spec.name}" for spec in scheduled} == set(jobs) - maintenance
    for spec in scheduled:
        assert spec.schedule is not None
        tick = jobs[f"tick:{spec.name}"]
        assert tick.misfire_grace_time == spec.schedule.misfire_grace_seconds
        assert str(tick.trigger) == str(
            schedule.cron_trigger(getattr(settings, spec.schedule.cron_setting))
        )
    assert str(jobs["tick:experiment_monitoring"].trigger).endswith("minute='*/5']")


async def test_a_tick_takes_max_attempts_from_the_spec_retry_policy(engine, monkeypatch):
    url = engine.url.render_as_string(hide_password=False)
    ctx = replica(url)
    every_second = CronTrigger(second="*", timezone="UTC")
    await enqueue_tick(ctx, "experiment_monitoring", every_second)
    custom = dataclasses.replace(SPECS["pattern_analysis"], retry=RetryPolicy(max_attempts=7))
    monkeypatch.setattr(schedule, "SPECS", {**SPECS, "pattern_analysis": custom})
    await enqueue_tick(ctx, "pattern_analysis", every_second)
    ctx.engine.dispose()
    attempts = {job.type: job.max_attempts for job in queue.list_jobs(engine)}
    assert attempts == {"experiment_monitoring": ctx.settings.max_attempts, "pattern_analysis": 7}
    assert all(job.payload == '{"scope":"all"}' for job in queue.list_jobs(engine))
