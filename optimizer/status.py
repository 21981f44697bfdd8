"""What `prompt-worker status` shows, read from the database in one pass.

Reads only (on SQLite they never wait for a writer's lock). The figures are the shared
database's, so they cover every replica, unlike /metrics which is per process.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.jobs import JOB_STATUSES
from models.llm_calls import LlmCall
from optimizer import db
from optimizer.clock import iso
from optimizer.config import Settings
from optimizer.experiments import store
from optimizer.llm.usage import WINDOW, utc_midnight
from optimizer.problems import Problem, configuration_problems
from optimizer.runtime import queue

RECENT_JOBS = 10
MAX_EXPERIMENTS = 50
ERROR_EXCERPT_CHARS = 60


@dataclass(frozen=True)
class JobLine:
    id: int
    type: str
    status: str
    attempts: int
    max_attempts: int
    age_seconds: int
    error: str | None


@dataclass(frozen=True)
class ArmLine:
    version: int
    is_control: bool
    status: str
    conversations: int
    # arm minus control on the primary metric, with its always-valid interval; None for the
    # control, before the first check, or when the check could not compute it (`error`).
    diff: float | None = None
    low: float | None = None
    high: float | None = None
    level: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class ExperimentLine:
    id: int
    prompt: str
    # running, paused or awaiting_approval: the last two wait for a person
    status: str
    primary_metric: str
    started_at: datetime
    checked_at: datetime | None
    decision: str | None
    arms: tuple[ArmLine, ...]
    reason: str | None = None  # why it paused or waits (what to do is in the text)
    winner_version: int | None = None  # awaiting approval: the version proposed


@dataclass(frozen=True)
class LlmSpend:
    calls_today: int
    input_tokens: int
    output_tokens: int
    cache_write_tokens: int
    cache_read_tokens: int
    cost_today_usd: float
    daily_budget_usd: float
    calls_last_hour: int
    calls_per_hour: int


@dataclass(frozen=True)
class Status:
    generated_at: datetime
    queue: dict[str, int]
    recent_jobs: tuple[JobLine, ...]
    experiments: tuple[ExperimentLine, ...]
    llm: LlmSpend
    # Settings that leave part of the service off (same list as /health "problems").
    problems: tuple[Problem, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        shaped: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        return shaped


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def excerpt(text: str | None, limit: int = ERROR_EXCERPT_CHARS) -> str | None:
    if not text:
        return None
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def read_status(engine: Engine, settings: Settings, now: datetime) -> Status:
    """Blocking; raises SQLAlchemyError when the database cannot be read."""
    reader = db.read_only(engine)
    counts = queue.count_by_status(reader)
    jobs = tuple(
        JobLine(
            j.id,
            j.type,
            j.status,
            j.attempts,
            j.max_attempts,
            max(0, int((now - j.created_at).total_seconds())),
            excerpt(j.error),
        )
        for j in queue.list_jobs(reader, limit=RECENT_JOBS)
    )
    with db.session_factory(reader)() as session:
        experiments = _live_experiments(session)
        llm = _llm_spend(session, settings, now)
    return Status(
        now,
        {s: counts.get(s, 0) for s in JOB_STATUSES},
        jobs,
        experiments,
        llm,
        tuple(configuration_problems(settings, apis=False)),
    )


def _live_experiments(session: Session) -> tuple[ExperimentLine, ...]:
    """Every experiment that has not ended, those waiting for a person first."""
    views = store.live_experiments(session, limit=MAX_EXPERIMENTS)
    latest = store.latest_analyses(session, [view.id for view in views])
    lines = []
    for view in views:
        analysis = latest.get(view.id)
        intervals = _intervals(analysis.statistics if analysis else None, view.primary_metric)
        arms = tuple(
            ArmLine(a.version, a.is_control, a.status, a.conversations, **intervals.get(a.id, {}))
            for a in view.arms
        )
        lines.append(
            ExperimentLine(
                view.id,
                view.prompt,
                view.status,
                view.primary_metric,
                view.started_at,
                analysis.checked_at if analysis else None,
                analysis.decision if analysis else None,
                arms,
                view.decision_reason,
                view.winner_version,
            )
        )
    return tuple(lines)


def _intervals(statistics: Any, metric: str) -> dict[int, dict[str, Any]]:
    """arm id -> its interval on `metric`, from a stored analysis (see stats.types)."""
    if not isinstance(statistics, dict):
        return {}
    found: dict[int, dict[str, Any]] = {}
    for c in statistics.get("comparisons") or []:
        if not isinstance(c, dict) or c.get("metric") != metric:
            continue
        arm_id = c.get("arm_id")
        if isinstance(arm_id, int):
            found[arm_id] = {
                "diff": c.get("diff"),
                "low": c.get("diff_low"),
                "high": c.get("diff_high"),
                "level": c.get("level"),
                "error": c.get("error"),
            }
    return found


def _llm_spend(session: Session, settings: Settings, now: datetime) -> LlmSpend:
    today = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(LlmCall.input_tokens), 0),
            func.coalesce(func.sum(LlmCall.output_tokens), 0),
            func.coalesce(func.sum(LlmCall.cache_creation_input_tokens), 0),
            func.coalesce(func.sum(LlmCall.cache_read_input_tokens), 0),
            func.coalesce(func.sum(LlmCall.cost_usd), 0.0),
        ).where(LlmCall.created_at >= utc_midnight(now))
    ).one()
    # The hourly limit counts Anthropic calls only (the offline stand-in costs nothing).
    last_hour = (
        session.scalar(
            select(func.count())
            .select_from(LlmCall)
            .where(LlmCall.provider == "anthropic", LlmCall.created_at > now - WINDOW)
        )
        or 0
    )
    return LlmSpend(
        int(today[0]),
        int(today[1]),
        int(today[2]),
        int(today[3]),
        int(today[4]),
        float(today[5]),
        settings.llm_daily_budget_usd,
        int(last_hour),
        settings.llm_calls_per_hour,
    )
