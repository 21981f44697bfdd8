"""`prompt-worker demo`: the whole loop on a fresh SQLite file, in accelerated time.

A simulated application (optimizer/demo/world.py) sends traffic every simulated 15 minutes
through the real resolve and ingest code; the real handlers run from the real queue with a
simulated clock: pattern analysis every hour, monitoring every 15 minutes, and whatever
they chain (variant generation, experiment creation). What changed in the database after
each step is printed as it happens.

With Claude, the first failed LLM call stops the demo with one line saying what went wrong
(the service would retry; a demo that fails every simulated hour shows nothing): calls use
at most one SDK retry and a shorter timeout, and `prompt-worker demo` probes the API before
it starts (optimizer/demo/probe.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import case, func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.experiments import Experiment
from models.insights import PatternInsight
from models.prompts import Prompt, PromptVersion
from optimizer import db, prompts
from optimizer.config import Settings
from optimizer.demo.world import FIRST_PROMPT, PROMPT_NAME, World, expected_success_rate
from optimizer.errors import JobDeferred, PromptWorkerError, describe
from optimizer.ingest import ingest
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.llm import build_llm_client
from optimizer.llm.client import LlmClient, LlmReply, LlmRequest
from optimizer.resolve import resolve
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.job_input import decode_stored_payload
from optimizer.runtime.queue import NewJob

TICK = timedelta(minutes=15)
START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday; fixed so that runs repeat exactly
# Claude in the demo: a stalled call must not hold the demo for the SDK's 10 minutes.
CALL_TIMEOUT_SECONDS = 30.0
MAX_RETRIES = 1
OFFLINE_HINT = (
    "to run the demo without the API: LLM_PROVIDER=offline make demo "
    "(or LLM_PROVIDER=offline prompt-worker demo)"
)


class DemoStopped(PromptWorkerError):
    """The demo cannot go on; the message is one line with what to do."""

    def __init__(self, problem: str) -> None:
        super().__init__(f"demo stopped: {problem}; {OFFLINE_HINT}")


class StopOnFailure:
    """The demo's LLM client: remembers the first failed call, so the demo stops there.
    (Pattern analysis turns a failed call into statistics-only themes and goes on, so the
    failure has to be caught here rather than from the job.)"""

    def __init__(self, inner: LlmClient) -> None:
        self.inner, self.provider = inner, inner.provider
        self.failure: str | None = None

    async def complete(self, request: LlmRequest) -> LlmReply:
        try:
            return await self.inner.complete(request)
        except Exception as exc:
            self.failure = self.failure or describe(exc)
            raise

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


@dataclass
class SimClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


@dataclass
class DemoSummary:
    provider: str
    insights: list[str] = field(default_factory=list)
    variants: list[int] = field(default_factory=list)
    experiments: list[dict[str, Any]] = field(default_factory=list)
    failed_jobs: list[str] = field(default_factory=list)
    active_version: int = 1
    success_before: float = 0.0
    success_after: float = 0.0
    expected_before: float = 0.0
    expected_after: float = 0.0


@dataclass
class _Seen:
    insights: set[int] = field(default_factory=set)
    versions: set[int] = field(default_factory=set)
    experiments: dict[int, str] = field(default_factory=dict)


async def run_demo(
    database: Path, *, days: float, seed: int, per_tick: int, settings: Settings, out: TextIO
) -> DemoSummary:
    url = f"sqlite:///{database}"
    engine = db.create_db_engine(url)
    try:
        db.migrate(engine)
        return await _simulate(
            engine,
            days=days,
            seed=seed,
            per_tick=per_tick,
            settings=settings.model_copy(update={"database_url": url}),
            out=out,
        )
    finally:
        engine.dispose()


async def _simulate(
    engine: Engine, *, days: float, seed: int, per_tick: int, settings: Settings, out: TextIO
) -> DemoSummary:
    clock = SimClock(START)
    sessions = db.session_factory(engine)
    llm = _llm(settings, sessions, clock)
    ctx = ServiceContext(
        settings=settings, engine=engine, sessions=sessions, stats=RunStats(), clock=clock, llm=llm
    )
    try:
        return await _loop(ctx, llm, clock, days=days, seed=seed, per_tick=per_tick, out=out)
    finally:
        await llm.aclose()


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
    *,
    days: float,
    seed: int,
    per_tick: int,
    out: TextIO,
) -> DemoSummary:
    engine, sessions = ctx.engine, ctx.sessions
    summary = DemoSummary(provider=llm.provider)
    with sessions.begin() as session:
        prompts.create_prompt(session, PROMPT_NAME, FIRST_PROMPT, actor="demo", now=clock.now)
    world, seen = World(seed), _Seen()
    _report_changes(engine, seen, clock.now, out, summary)  # version 1, quietly
    say = _printer(out)
    say(
        clock.now,
        f"prompt {PROMPT_NAME!r} v1 active (true success rate "
        f"{expected_success_rate(FIRST_PROMPT):.1%}); LLM: {llm.provider}",
    )
    ticks = int(days * 24 * 3600 / TICK.total_seconds())
    for tick in range(1, ticks + 1):
        clock.now = START + tick * TICK
        _serve_traffic(engine, world, clock.now - TICK, per_tick)
        if tick % 4 == 0:
            _enqueue(engine, "pattern_analysis", {"prompt": PROMPT_NAME}, clock.now)
        _enqueue(engine, "experiment_monitoring", {}, clock.now)
        await _drain(ctx, llm, summary, say)
        _report_changes(engine, seen, clock.now, out, summary)
    _finish_summary(engine, summary, clock.now)
    return summary


def _printer(out: TextIO) -> Callable[[datetime, str], None]:
    def say(at: datetime, text: str) -> None:
        elapsed = at - START
        stamp = f"day {elapsed.days} {elapsed.seconds // 3600:02d}:{elapsed.seconds // 60 % 60:02d}"
        print(f"[{stamp}] {text}", file=out, flush=True)

    return say


def _serve_traffic(engine: Engine, world: World, start: datetime, count: int) -> None:
    """The application at work: resolve each visitor's version, log how it went."""
    rows = []
    # One read-only session per 15 minutes: the versions cannot change within a tick.
    with Session(db.read_only(engine)) as session:
        for visit in world.visits(start, TICK.total_seconds() / 60, count):
            answer = resolve(session, PROMPT_NAME, visit.unit_id)
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


async def _drain(
    ctx: ServiceContext,
    llm: StopOnFailure,
    summary: DemoSummary,
    say: Callable[[datetime, str], None],
) -> None:
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
            say(ctx.clock(), f"{job.type} deferred: {exc}")
        except Exception as exc:  # shown, and the demo goes on as the service would
            message = f"{job.type} failed: {' '.join(str(exc).split())[:300]}"
            queue.fail(ctx.engine, job.lease, message, now=ctx.clock(), retry_in_seconds=None)
            summary.failed_jobs.append(message)
            say(ctx.clock(), message)
        else:
            queue.complete(ctx.engine, job.lease, result, now=ctx.clock())
        if llm.failure is not None:
            raise DemoStopped(f"an LLM call failed: {llm.failure}")


def _report_changes(
    engine: Engine, seen: _Seen, now: datetime, out: TextIO, summary: DemoSummary
) -> None:
    say = _printer(out)
    first = not seen.versions
    with db.session_factory(engine)() as session:
        for insight in session.scalars(
            select(PatternInsight)
            .where(PatternInsight.is_actionable.is_(True))
            .order_by(PatternInsight.id)
        ):
            if insight.id not in seen.insights:
                seen.insights.add(insight.id)
                summary.insights.append(insight.title)
                say(now, f"insight: {insight.title}")
        for version in session.scalars(select(PromptVersion).order_by(PromptVersion.id)):
            if version.id not in seen.versions:
                seen.versions.add(version.id)
                if not first:
                    summary.variants.append(version.version)
                    notes = " ".join((version.change_notes or "").split())[:120]
                    say(
                        now,
                        f"variant v{version.version} generated ({version.source}, "
                        f"true success rate {expected_success_rate(version.content):.1%})"
                        f": {notes}",
                    )
        for experiment in session.scalars(select(Experiment).order_by(Experiment.id)):
            before = seen.experiments.get(experiment.id)
            if before != experiment.status:
                seen.experiments[experiment.id] = experiment.status
                _say_experiment(session, experiment, before, now, say, summary)


def _say_experiment(
    session: Any,
    experiment: Experiment,
    before: str | None,
    now: datetime,
    say: Callable[[datetime, str], None],
    summary: DemoSummary,
) -> None:
    if before is None:
        say(now, f"experiment {experiment.id} started ({experiment.status})")
        summary.experiments.append({"id": experiment.id, "status": experiment.status})
        if experiment.status == "running":
            return
    reason = " ".join((experiment.decision_reason or "").split())[:300]
    say(now, f"experiment {experiment.id} {experiment.status}: {reason}")
    for entry in summary.experiments:
        if entry["id"] == experiment.id:
            entry.update(
                status=experiment.status, reason=reason, winner=_winner_number(session, experiment)
            )


def _winner_number(session: Any, experiment: Experiment) -> int | None:
    if experiment.winner_version_id is None:
        return None
    number: int | None = session.scalar(
        select(PromptVersion.version).where(PromptVersion.id == experiment.winner_version_id)
    )
    return number


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
        summary.expected_after = expected_success_rate(active.content)
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


def print_summary(summary: DemoSummary, database: Path, seconds: float, out: TextIO) -> None:
    lines = [
        "",
        "== summary",
        f"LLM:                 {summary.provider}"
        + (
            " (deterministic offline generator, no Claude calls)"
            if summary.provider == "offline"
            else ""
        ),
        f"actionable insights: {len(summary.insights)}"
        + "".join(f"\n  - {title}" for title in summary.insights),
        f"variants generated:  {', '.join(f'v{n}' for n in summary.variants) or 'none'}",
        f"experiments:         {len(summary.experiments)}"
        + "".join(
            f"\n  - experiment {e['id']}: {e['status']}"
            + (f", winner v{e['winner']}" if e.get("winner") else "")
            for e in summary.experiments
        ),
        f"active version:      v{summary.active_version}",
        f"success rate before: {summary.success_before:.1%} (v1, first simulated day; "
        f"true {summary.expected_before:.1%})",
        f"success rate after:  {summary.success_after:.1%} (v{summary.active_version}, last "
        f"simulated day; true {summary.expected_after:.1%})",
        f"failed jobs:         {len(summary.failed_jobs)}",
        f"database:            {database}",
        f"took {seconds:.1f} s",
    ]
    print("\n".join(lines), file=out, flush=True)
