"""`prompt-worker demo`: the whole loop on a fresh SQLite file, in accelerated time.

A simulated application (optimizer/demo/world.py) sends traffic every simulated 15 minutes
through the real routing and ingest code; the real handlers run from the real queue with a
simulated clock: pattern analysis every hour, monitoring every 15 minutes, and whatever
they chain (variant generation, candidate replay, experiment creation). What each job
changed, and the replay's verdicts, are printed as they happen (optimizer/demo/report.py).
benchmarks/candidates.py runs the same simulation for weeks, with and without replay.

With Claude, the first failed LLM call stops the demo with one line saying what went wrong
(the service would retry; a demo that fails every simulated hour shows nothing): calls use
at most one SDK retry and a shorter timeout, and `prompt-worker demo` probes the API before
it starts (optimizer/demo/probe.py).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.prompts import Prompt, PromptVersion
from optimizer import db, prompts
from optimizer.client_config import build
from optimizer.config import Settings
from optimizer.demo.report import DemoSummary, Reporter, day_of
from optimizer.demo.world import FIRST_PROMPT, PROMPT_NAME, START, World, expected_success_rate
from optimizer.errors import JobDeferred, PromptWorkerError, describe
from optimizer.ingest import ingest
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.llm import build_llm_client
from optimizer.llm.client import LlmClient, LlmReply, LlmRequest
from optimizer.routing import Routing
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.job_input import decode_stored_payload
from optimizer.runtime.queue import NewJob

TICK = timedelta(minutes=15)
# Claude in the demo: a stalled call must not hold the demo for the SDK's 10 minutes.
CALL_TIMEOUT_SECONDS = 30.0
MAX_RETRIES = 1
DEFAULT_USERS = 3000
OFFLINE_HINT = (
    "to run the demo without the API: LLM_PROVIDER=offline make demo "
    "(or LLM_PROVIDER=offline prompt-worker demo)"
)


class DemoStopped(PromptWorkerError):
    """The demo cannot go on; the message is one line with what to do."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"demo stopped: {problem}; {OFFLINE_HINT}")


@dataclass
class CallSizes:
    """The size of one purpose's requests and replies, in characters (for a cost
    estimate where the provider reports no tokens)."""

    calls: int = 0
    request_chars: int = 0
    reply_chars: int = 0


class StopOnFailure:
    """The demo's LLM client: remembers the first failed call, so the demo stops there.
    (Pattern analysis turns a failed call into statistics-only themes and goes on, so the
    failure has to be caught here rather than from the job.) It also adds up the size of
    each purpose's requests and replies."""

    def __init__(self, inner: LlmClient) -> None:
        self.inner, self.provider = inner, inner.provider
        self.failure: str | None = None
        self.sizes: dict[str, CallSizes] = defaultdict(CallSizes)

    async def complete(self, request: LlmRequest) -> LlmReply:
        try:
            reply = await self.inner.complete(request)
        except Exception as exc:
            self.failure = self.failure or describe(exc)
            raise
        sizes = self.sizes[request.purpose]
        sizes.calls += 1
        sizes.request_chars += (
            len(request.system) + len(request.user) + sum(len(t) for _, t in request.history)
        )
        sizes.reply_chars += len(reply.text)
        return reply

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


@dataclass
class SimClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass(frozen=True)
class Simulation:
    days: float
    seed: int
    per_tick: int
    users: int = DEFAULT_USERS


async def run_demo(
    database: Path,
    *,
    days: float,
    seed: int,
    per_tick: int,
    settings: Settings,
    out: TextIO,
    users: int = DEFAULT_USERS,
    sizes: dict[str, CallSizes] | None = None,
) -> DemoSummary:
    """Simulate on a new SQLite file at `database`. `sizes`, when given, receives the size
    of the LLM requests and replies by purpose."""
    url = f"sqlite:///{database}"
    engine = db.create_db_engine(url)
    try:
        db.migrate(engine)
        return await _simulate(
            engine,
            Simulation(days, seed, per_tick, users),
            settings.model_copy(update={"database_url": url}),
            out,
            sizes,
        )
    finally:
        engine.dispose()


async def _simulate(
    engine: Engine,
    simulation: Simulation,
    settings: Settings,
    out: TextIO,
    sizes: dict[str, CallSizes] | None,
) -> DemoSummary:
    clock = SimClock(START)
    sessions = db.session_factory(engine)
    llm = _llm(settings, sessions, clock)
    ctx = ServiceContext(
        settings=settings, engine=engine, sessions=sessions, stats=RunStats(), clock=clock, llm=llm
    )
    try:
        return await _loop(ctx, llm, clock, simulation, out)
    finally:
        await llm.aclose()
        if sizes is not None:
            sizes.update(llm.sizes)


def _llm(settings: Settings, sessions: Any, clock: SimClock) -> StopOnFailure:
    if settings.llm_provider == "anthropic" and settings.anthropic_api_key:
        from optimizer.llm.anthropic_client import AnthropicClient

        limited = settings.model_copy(
            update={"llm_max_retries": min(settings.llm_max_retries, MAX_RETRIES)}
        )
        return StopOnFailure(
            AnthropicClient(limited, sessions, clock, timeout=CALL_TIMEOUT_SECONDS)
        )
    return StopOnFailure(build_llm_client(settings, sessions, clock))


async def _loop(
    ctx: ServiceContext,
    llm: StopOnFailure,
    clock: SimClock,
    simulation: Simulation,
    out: TextIO,
) -> DemoSummary:
    engine, sessions = ctx.engine, ctx.sessions
    summary = DemoSummary(provider=llm.provider)
    with sessions.begin() as session:
        prompts.create_prompt(session, PROMPT_NAME, FIRST_PROMPT, actor="demo", now=clock.now)
    world = World(simulation.seed, simulation.users, start=START)
    reporter = Reporter(engine, out, summary)
    reporter.changes(clock.now, quiet=True)  # version 1
    reporter.say(
        clock.now,
        f"prompt {PROMPT_NAME!r} v1 active (true success rate "
        f"{expected_success_rate(FIRST_PROMPT):.1%}); LLM: {llm.provider}; replay "
        + ("on" if ctx.settings.replay_enabled else "off (REPLAY_ENABLED=false)"),
    )
    ticks = int(simulation.days * 24 * 3600 / TICK.total_seconds())
    for tick in range(1, ticks + 1):
        clock.now = START + tick * TICK
        _serve_traffic(engine, world, clock.now - TICK, simulation.per_tick)
        if tick % 4 == 0:
            _enqueue(engine, "pattern_analysis", {"prompt": PROMPT_NAME}, clock.now)
        _enqueue(engine, "experiment_monitoring", {}, clock.now)
        await _drain(ctx, llm, reporter)
    _finish_summary(engine, summary, clock.now)
    return summary


def _serve_traffic(engine: Engine, world: World, start: datetime, count: int) -> None:
    """The application at work: each visitor gets the version routing gives its unit (the
    configuration is read once per 15 minutes, as the HTTP route and the SDKs evaluate a
    snapshot of it), and the conversation is logged through ingest."""
    with Session(db.read_only(engine)) as session:
        routing = Routing.from_config(build(session))
    rows = []
    for visit in world.visits(start, TICK.total_seconds() / 60, count):
        answer = routing.answer(PROMPT_NAME, visit.unit_id)
        rows.append(
            {
                "prompt": PROMPT_NAME,
                "version": answer["version"],
                "experiment_id": answer["experiment_id"],
                **world.outcome(visit, answer["content"]),
            }
        )
    ingest(engine, {"conversations": rows}, now=start + TICK)


def _enqueue(engine: Engine, job_type: str, payload: dict[str, Any], now: datetime) -> None:
    queue.enqueue(engine, NewJob(type=job_type, payload=payload), max_attempts=1, now=now)


async def _drain(ctx: ServiceContext, llm: StopOnFailure, reporter: Reporter) -> None:
    """Run every job that is due now, including those the finished ones chain; stop the
    demo at the first failed LLM call."""
    handlers = default_handlers()

    async def no_progress(_progress: int, _step: str | None = None) -> None:
        return None

    while (job := queue.claim(ctx.engine, "demo", lease_seconds=3600, now=ctx.clock())) is not None:
        active = ActiveJob(
            job.id, job.type, job.attempts, decode_stored_payload(job.payload), no_progress
        )
        try:
            result = await handlers[job.type](ctx, active)
        except JobDeferred as exc:
            queue.defer(ctx.engine, job.lease, str(exc), until=exc.until)
            reporter.say(ctx.clock(), f"{job.type} deferred: {exc}")
        except Exception as exc:  # shown, and the demo goes on as the service would
            message = f"{job.type} failed: {' '.join(str(exc).split())[:300]}"
            queue.fail(ctx.engine, job.lease, message, now=ctx.clock(), retry_in_seconds=None)
            reporter.summary.failed_jobs.append(message)
            reporter.say(ctx.clock(), message)
        else:
            queue.complete(ctx.engine, job.lease, result, now=ctx.clock())
            reporter.job_done(ctx.clock(), job.type, result)
        if llm.failure is not None:
            raise DemoStopped(f"an LLM call failed: {llm.failure}")
    reporter.changes(ctx.clock())


def _finish_summary(engine: Engine, summary: DemoSummary, end: datetime) -> None:
    with db.session_factory(engine)() as session:
        prompt_id = session.scalar(select(Prompt.id).where(Prompt.name == PROMPT_NAME))
        active = session.scalars(
            select(PromptVersion).where(
                PromptVersion.prompt_id == prompt_id, PromptVersion.status == "active"
            )
        ).one()
        first = session.scalars(
            select(PromptVersion).where(
                PromptVersion.prompt_id == prompt_id, PromptVersion.version == 1
            )
        ).one()
        summary.active_version = active.version
        summary.expected_before = expected_success_rate(first.content)
        summary.expected_after = expected_success_rate(active.content, day_of(end))
        summary.success_before = _rate(session, first.id, START, START + timedelta(days=1))
        summary.success_after = _rate(session, active.id, end - timedelta(days=1), end)


def _rate(session: Any, version_id: int, start: datetime, end: datetime) -> float:
    n, wins = session.execute(
        select(func.count(), func.sum(case((Conversation.success.is_(True), 1), else_=0))).where(
            Conversation.version_id == version_id,
            Conversation.occurred_at >= start,
            Conversation.occurred_at < end,
        )
    ).one()
    return float(wins or 0) / n if n else float("nan")
