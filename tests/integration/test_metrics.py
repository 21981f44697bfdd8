"""GET /metrics scraped and parsed by prometheus-client's own parser, after real jobs ran
through a Worker on real databases; and while the database is unreachable."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import create_db_engine, session_factory
from optimizer.errors import PermanentJobError
from optimizer.experiments import store
from optimizer.health import HealthMonitor
from optimizer.jobs.context import ActiveJob, Handler, ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.llm import usage
from optimizer.prometheus import Metrics
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from optimizer.runtime.worker import Worker
from tests.support.experiments import add_conversations, arm_ids, seed_prompt
from tests.support.http_client import ClientMaker

FAST = Settings(
    poll_interval_seconds=0.05,
    lease_seconds=1.0,
    retry_base_seconds=0.0,
    job_timeout_seconds=30,
    shutdown_grace_seconds=0.5,
)
UNREACHABLE_URL = "postgresql+psycopg://nobody@127.0.0.1:1/x"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def make_ctx(engine: Engine, metrics: Metrics, **overrides: Any) -> ServiceContext:
    return ServiceContext(
        settings=FAST.model_copy(update=overrides),
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=utcnow,
        metrics=metrics,
    )


def add_job(engine: Engine, job_type: str, max_attempts: int = 3) -> int:
    job, _ = queue.enqueue(
        engine, NewJob(type=job_type, payload={}), max_attempts=max_attempts, now=utcnow()
    )
    return job.id


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


def finished(engine: Engine, *ids: int) -> Callable[[], bool]:
    return lambda: all(queue.get_job(engine, i).status in ("completed", "failed") for i in ids)


def parse(body: str) -> Samples:
    """Every sample of the scrape, keyed by (sample name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def scrape(
    make_client: ClientMaker, engine: Engine, health: HealthMonitor, metrics: Metrics | None = None
) -> tuple[str, Samples]:
    client = await make_client(engine, Settings(), health=health, metrics=metrics)
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    body = await resp.text()
    return body, parse(body)


def running_experiment(engine: Engine) -> int:
    """An experiment whose variant clearly wins, started long enough ago to be decided."""
    seed_prompt(engine, "support-bot")
    with session_factory(engine).begin() as session:
        experiment_id = store.create_experiment(
            session, "support-bot", [2], now=utcnow() - timedelta(hours=25)
        ).id
    control, variant = arm_ids(engine, experiment_id)
    add_conversations(engine, experiment_id, control, 400, 120)
    add_conversations(engine, experiment_id, variant, 400, 240)
    return experiment_id


def llm_record(outcome: str, **tokens: Any) -> usage.CallRecord:
    return usage.CallRecord(
        purpose="variant_generation",
        requested_model="claude-test",
        model="claude-test",
        provider="anthropic",
        outcome=outcome,
        created_at=utcnow(),
        **tokens,
    )


async def test_scrape_after_real_jobs(engine, make_client):
    await asyncio.to_thread(running_experiment, engine)

    async def calls_claude(ctx: ServiceContext, job: ActiveJob) -> dict:
        # As the LLM clients do: the row is written in a thread, which copies the context.
        await asyncio.to_thread(
            usage.record_call,
            ctx.sessions,
            llm_record(
                "ok",
                job_id=job.id,
                input_tokens=1200,
                output_tokens=300,
                cache_creation_input_tokens=40,
                cache_read_input_tokens=800,
                cost_usd=0.0125,
            ),
        )
        await asyncio.to_thread(
            usage.record_call, ctx.sessions, llm_record("rate_limited", job_id=job.id)
        )
        return {"message": "done"}

    async def refuses(ctx: ServiceContext, job: ActiveJob) -> dict:
        raise PermanentJobError("prompt 'x' does not exist")

    async def flaky(ctx: ServiceContext, job: ActiveJob) -> dict:
        raise RuntimeError("upstream broke")

    handlers: dict[str, Handler] = {
        "full_cycle": calls_claude,
        "pattern_analysis": refuses,
        "variant_generation": flaky,
        "experiment_monitoring": default_handlers()["experiment_monitoring"],
    }
    metrics = Metrics()
    worker = Worker(make_ctx(engine, metrics), handlers, worker_id="w", rng=random.Random(1))
    ids = [
        add_job(engine, "full_cycle"),
        add_job(engine, "pattern_analysis"),
        add_job(engine, "variant_generation", max_attempts=2),
        add_job(engine, "experiment_monitoring"),
    ]
    worker.start()
    try:
        await wait_for(finished(engine, *ids))
    finally:
        await worker.stop(1)
    # A call recorded outside any job (no metrics bound) is not counted by this service.
    await asyncio.to_thread(usage.record_call, session_factory(engine), llm_record("ok"))

    health = HealthMonitor(engine, RunStats(), started_at=utcnow())
    assert await health.refresh_once()
    _, samples = await scrape(make_client, engine, health, metrics)

    jobs = "prompt_worker_jobs_total"
    assert value(samples, jobs, type="full_cycle", status="completed") == 1
    assert value(samples, jobs, type="experiment_monitoring", status="completed") == 1
    assert value(samples, jobs, type="pattern_analysis", status="failed") == 1
    assert value(samples, jobs, type="variant_generation", status="retried") == 1
    assert value(samples, jobs, type="variant_generation", status="failed") == 1
    assert value(samples, jobs, type="full_cycle", status="failed") is None

    duration = "prompt_worker_job_duration_seconds"
    assert value(samples, f"{duration}_count", type="variant_generation") == 2
    assert value(samples, f"{duration}_count", type="full_cycle") == 1
    assert value(samples, f"{duration}_bucket", type="full_cycle", le="+Inf") == 1
    assert 0 <= (value(samples, f"{duration}_sum", type="full_cycle") or -1) < 10

    pickup = "prompt_worker_job_pickup_latency_seconds"
    for job_type, attempts in (
        ("full_cycle", 1),
        ("variant_generation", 2),
        ("experiment_monitoring", 1),
    ):
        assert value(samples, f"{pickup}_count", type=job_type) == attempts
    # Claimed within a few polls of being due, not hours (a wrong baseline would show).
    assert 0 <= (value(samples, f"{pickup}_sum", type="full_cycle") or -1) < 10

    for status, n in {
        "completed": 2,
        "failed": 2,
        "pending": 0,
        "running": 0,
        "cancelled": 0,
    }.items():
        assert value(samples, "prompt_worker_queue_depth", status=status) == n
    assert value(samples, "prompt_worker_database_up") == 1

    calls = "prompt_worker_llm_calls_total"
    assert value(samples, calls, model="claude-test", outcome="ok") == 1
    assert value(samples, calls, model="claude-test", outcome="rate_limited") == 1
    tokens = "prompt_worker_llm_tokens_total"
    for kind, n in {"input": 1200, "output": 300, "cache_write": 40, "cache_read": 800}.items():
        assert value(samples, tokens, model="claude-test", kind=kind) == n
    assert value(samples, "prompt_worker_llm_cost_usd_total", model="claude-test") == pytest.approx(
        0.0125
    )

    assert value(samples, "prompt_worker_experiment_decisions_total", decision="promote") == 1


@pytest.fixture
def unreachable_engine() -> Iterator[Engine]:
    engine = create_db_engine(UNREACHABLE_URL)
    yield engine
    engine.dispose()


async def test_scrape_answers_while_database_is_unreachable(unreachable_engine, make_client):
    health = HealthMonitor(unreachable_engine, RunStats(), started_at=utcnow())
    assert await health.refresh_once() is False
    started = time.monotonic()
    body, samples = await scrape(make_client, unreachable_engine, health)
    assert time.monotonic() - started < 1.0
    assert value(samples, "prompt_worker_database_up") == 0
    # Never read: no made-up zeros for the queue.
    assert "prompt_worker_queue_depth" not in body


async def test_last_known_queue_depth_is_served_through_an_outage(sqlite_engine, make_client):
    await asyncio.to_thread(add_job, sqlite_engine, "full_cycle")
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow())
    metrics = Metrics()
    assert await health.refresh_once()
    _, before = await scrape(make_client, sqlite_engine, health, metrics)
    assert value(before, "prompt_worker_queue_depth", status="pending") == 1
    with sqlite_engine.begin() as conn:  # the periodic read now fails
        conn.execute(text("ALTER TABLE ai_pattern_insights RENAME TO hidden"))
    assert await health.refresh_once() is False
    resp = await make_client.clients[0].get("/metrics")
    during = parse(await resp.text())
    assert value(during, "prompt_worker_database_up") == 0
    assert value(during, "prompt_worker_queue_depth", status="pending") == 1


async def test_openmetrics_when_the_scraper_asks_for_it(sqlite_engine, make_client):
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow())
    await scrape(make_client, sqlite_engine, health)
    resp = await make_client.clients[0].get(
        "/metrics", headers={"Accept": "application/openmetrics-text"}
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("application/openmetrics-text")
    assert (await resp.text()).rstrip().endswith("# EOF")


async def test_each_app_has_its_own_registry(sqlite_engine, make_client):
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow())
    first, second = Metrics(), Metrics()
    first.experiment_decision("promote")
    _, a = await scrape(make_client, sqlite_engine, health, first)
    _, b = await scrape(make_client, sqlite_engine, health, second)
    assert value(a, "prompt_worker_experiment_decisions_total", decision="promote") == 1
    assert value(b, "prompt_worker_experiment_decisions_total", decision="promote") is None
