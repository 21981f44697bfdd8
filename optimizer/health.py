"""What /health reports: this process's counters plus database counts refreshed in the
background.

/health is the liveness probe, so it must answer even when the database is down or hangs.
The request therefore only reads the snapshot that `refresh_forever` keeps up to date; it
never opens a connection itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from models.experiments import Experiment
from models.insights import PatternInsight
from models.jobs import JOB_STATUSES
from models.prompts import PromptVersion
from optimizer.clock import iso, utcnow
from optimizer.run_stats import RunStats
from optimizer.runtime import queue

log = logging.getLogger("prompt_worker.health")

STALE_AFTER_REFRESHES = 3
MAX_ERROR_CHARS = 200
# What anyone may read when the database fails: the driver's text names the host and
# port (and sometimes the user), which only admins and the log get.
DATABASE_UNAVAILABLE = "database unavailable"
TOTAL_NAMES = (
    "jobsCompleted",
    "jobsFailed",
    "experimentsCreated",
    "experimentsCompleted",
    "insights",
    "promptVersions",
)


def iso_seconds(moment: datetime) -> str:
    """The timestamp layout of the public /health shape: 2026-11-22T09:00:00Z."""
    return iso(moment, "seconds")


def short_error(exc: BaseException) -> str:
    """One line, bounded: SQLAlchemy appends the SQL and a docs link on later lines."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:MAX_ERROR_CHARS]


@dataclass(frozen=True)
class DbCounts:
    queue: dict[str, int]
    totals: dict[str, int]


@dataclass
class _State:
    counts: DbCounts | None = None  # last successful read, kept through outages
    checked_at: datetime | None = None  # last attempt, successful or not
    ok_at: datetime | None = None  # last successful attempt
    error: str | None = None  # driver text; None when the last attempt succeeded


def _count(conn: Connection, model: Any, *where: Any) -> int:
    stmt = select(func.count()).select_from(model).where(*where)
    return int(conn.execute(stmt).scalar_one())


def read_counts(engine: Engine) -> DbCounts:
    """Blocking; run it in a thread."""
    by_status = queue.count_by_status(engine)
    queue_counts = {status: by_status.get(status, 0) for status in JOB_STATUSES}
    with engine.connect() as conn:
        totals = {
            "jobsCompleted": queue_counts["completed"],
            "jobsFailed": queue_counts["failed"],
            "experimentsCreated": _count(conn, Experiment),
            "experimentsCompleted": _count(conn, Experiment, Experiment.status == "completed"),
            "insights": _count(conn, PatternInsight),
            "promptVersions": _count(conn, PromptVersion),
        }
    return DbCounts(queue=queue_counts, totals=totals)


class HealthMonitor:
    def __init__(
        self,
        engine: Engine,
        stats: RunStats,
        started_at: datetime,
        refresh_seconds: float = 5.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._stats = stats
        self._started_at = started_at
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._state = _State()

    @property
    def refresh_seconds(self) -> float:
        return self._refresh_seconds

    async def refresh_forever(self) -> None:
        """Runs until cancelled; a failed refresh is recorded and the loop carries on."""
        while True:
            await self.refresh_once()
            await asyncio.sleep(self._refresh_seconds)

    async def refresh_once(self) -> bool:
        """Read the counts in a thread. Returns whether the database answered."""
        try:
            counts = await asyncio.to_thread(read_counts, self._engine)
        except Exception as exc:  # any failure here only degrades /health, never kills it
            self._record_failure(short_error(exc))
            return False
        self._record_success(counts)
        return True

    def _record_success(self, counts: DbCounts) -> None:
        now = self._clock()
        if self._state.error is not None:
            log.info("database reachable again")
        self._state = _State(counts=counts, checked_at=now, ok_at=now, error=None)

    def _record_failure(self, error: str) -> None:
        # Log when the problem starts or changes, not on every refresh of a long outage.
        if error != self._state.error:
            log.warning("health refresh failed; database unreachable", extra={"error": error})
        self._state = _State(
            counts=self._state.counts,
            checked_at=self._clock(),
            ok_at=self._state.ok_at,
            error=error,
        )

    def _is_stale(self, now: datetime) -> bool:
        if self._state.ok_at is None:
            return True
        age = (now - self._state.ok_at).total_seconds()
        return age > STALE_AFTER_REFRESHES * self._refresh_seconds

    def _database(self, now: datetime, detailed: bool) -> dict[str, Any]:
        state = self._state
        error = state.error
        if error is not None and not detailed:
            error = DATABASE_UNAVAILABLE
        elif error is None and state.checked_at is None:
            error = "not checked yet"
        elif error is None and self._is_stale(now):
            # A refresh that hangs never records a failure; its silence is the failure.
            age = int((now - state.ok_at).total_seconds()) if state.ok_at else 0
            error = f"no successful check for {age} s"
        return {
            "ok": error is None,
            "checkedAt": iso_seconds(state.checked_at) if state.checked_at else None,
            "error": error,
        }

    @property
    def started_at(self) -> datetime:
        return self._started_at

    def report(self, now: datetime, *, detailed: bool = False) -> dict[str, Any]:
        """The /health body. Reads only memory: safe when the database is down. The
        database error is generic unless `detailed` (an admin asked)."""
        database = self._database(now, detailed)
        counts = self._state.counts
        return {
            "status": "healthy" if database["ok"] else "degraded",
            "uptime": max(0, int((now - self._started_at).total_seconds())),
            "stats": self._stats.snapshot(),
            "timestamp": iso_seconds(now),
            "totals": dict(counts.totals) if counts else dict.fromkeys(TOTAL_NAMES, 0),
            "queue": dict(counts.queue) if counts else dict.fromkeys(JOB_STATUSES, 0),
            "database": database,
        }
