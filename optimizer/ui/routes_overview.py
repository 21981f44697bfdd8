"""/ui/: the overview. Health and this process's run stats (HealthMonitor.report, from
memory), the shared database's status (status.read_status: queue, recent jobs, live
experiments with their primary interval, LLM calls and spend against the limits), the
experiments whose winner awaits a person's approval, the latest decisions of the experiment
checks, and the configuration problems."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.experiments import store
from optimizer.http.keys import ENGINE, HEALTH, SETTINGS
from optimizer.problems import configuration_problems
from optimizer.status import LlmSpend, read_status
from optimizer.ui import web as ui_web

RECENT_DECISIONS = 10


@dataclass(frozen=True)
class Usage:
    """A figure against its limit (the settings require limits above zero)."""

    used: float
    limit: float

    @property
    def percent(self) -> float:
        """Share of the limit used, in percent, capped at 100 for the bar."""
        return min(100.0, 100.0 * self.used / self.limit)

    @property
    def reached(self) -> bool:
        return self.used >= self.limit


def label(name: str) -> str:
    """A camelCase stat name as words: jobsCompleted -> "Jobs completed"."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", name).capitalize()


def usage(llm: LlmSpend) -> dict[str, Usage]:
    return {
        "cost": Usage(llm.cost_today_usd, llm.daily_budget_usd),
        "calls": Usage(llm.calls_last_hour, llm.calls_per_hour),
    }


def overview_context(
    session: Session,
    engine: Engine,
    settings: Settings,
    report: dict[str, Any],
    started_at: datetime,
    now: datetime,
) -> dict[str, object]:
    status = read_status(engine, settings, now)
    return {
        "health": report,
        "started_at": started_at,
        "run_stats": [(label(k), v) for k, v in report["stats"].items()],
        "status": status,
        "awaiting": [e for e in status.experiments if e.status == "awaiting_approval"],
        "recent_jobs": [
            (job, now - timedelta(seconds=job.age_seconds)) for job in status.recent_jobs
        ],
        "usage": usage(status.llm),
        "queued": sum(status.queue.values()),
        "decisions": store.recent_decisions(session, limit=RECENT_DECISIONS),
        # With the tokens (apis=True): the dashboard is the service's own page.
        "problems": configuration_problems(settings, apis=True),
    }


async def overview(request: web.Request) -> web.Response:
    engine, settings = request.config_dict[ENGINE], request.config_dict[SETTINGS]
    now = utcnow()
    # Memory only: the health monitor's snapshot never waits on the database.
    health = request.config_dict[HEALTH]
    report = health.report(now, detailed=True)
    return await ui_web.page(
        request,
        "overview.html",
        lambda session: overview_context(session, engine, settings, report, health.started_at, now),
        section="overview",
    )


def add_routes(ui: web.Application) -> None:
    ui.router.add_get("/", overview)
