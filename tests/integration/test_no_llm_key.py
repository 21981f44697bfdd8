"""The default provider without ANTHROPIC_API_KEY, through the real worker, handlers and
client factory: work that needs Claude is not attempted (full_cycle skips generation with
the reason), and a variant_generation job an admin queues fails at once, saying what to
set."""

from __future__ import annotations

import random
from collections.abc import Callable

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.llm_calls import LlmCall
from models.prompts import PromptVersion
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.jobs.context import ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.llm import build_llm_client
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from optimizer.runtime.worker import Worker
from tests.integration.test_worker import wait_for
from tests.support.experiments import seed_prompt

NO_KEY = Settings(
    poll_interval_seconds=0.05,
    lease_seconds=1.0,
    retry_base_seconds=0.0,
    job_timeout_seconds=30,
    shutdown_grace_seconds=0.5,
    max_attempts=3,
)


def worker(engine: Engine) -> Worker:
    sessions = session_factory(engine)
    ctx = ServiceContext(
        settings=NO_KEY,
        engine=engine,
        sessions=sessions,
        stats=RunStats(),
        clock=utcnow,
        llm=build_llm_client(NO_KEY, sessions, utcnow),
    )
    return Worker(ctx, default_handlers(), worker_id="no-key", rng=random.Random(1))


def finished(engine: Engine, job_id: int) -> Callable[[], bool]:
    return lambda: queue.get_job(engine, job_id).status in ("completed", "failed")


def count(engine: Engine, model: type) -> int:
    with session_factory(engine)() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


async def run_one(engine: Engine, job_type: str, payload: dict[str, object]) -> dict:
    job, _ = queue.enqueue(
        engine, NewJob(type=job_type, payload=payload), max_attempts=3, now=utcnow()
    )
    running = worker(engine)
    running.start()
    try:
        await wait_for(finished(engine, job.id))
    finally:
        await running.stop(1)
    return queue.get_job(engine, job.id).to_dict()


async def test_admin_variant_generation_fails_at_once_saying_what_to_set(engine):
    seed_prompt(engine, "support-bot")
    job = await run_one(engine, "variant_generation", {"prompt": "support-bot"})
    assert job["status"] == "failed" and job["attempts"] == 1
    assert "ANTHROPIC_API_KEY" in job["error"] and "LLM_PROVIDER=offline" in job["error"]
    assert count(engine, LlmCall) == 0


async def test_full_cycle_skips_generation_with_the_reason(engine):
    seed_prompt(engine, "support-bot", candidates=0)
    job = await run_one(engine, "full_cycle", {"prompt": "support-bot", "always_generate": True})
    assert job["status"] == "completed", job["error"]
    result = job["result"]
    for step in ("generation", "creation"):
        assert result[step]["skipped"] is True
        assert result[step]["message"].startswith("skipped: no ANTHROPIC_API_KEY")
    assert "LLM_PROVIDER=offline" in result["message"]
    assert count(engine, PromptVersion) == 1 and count(engine, LlmCall) == 0
