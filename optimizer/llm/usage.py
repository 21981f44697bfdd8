"""Recording every LLM call and enforcing the limits on them.

Each attempt (a success, an overload, a rate limit, a failure) is one `llm_calls` row, so
spend and call counts can be audited and the limits below can be computed from the table
that every replica shares:

- LLM_CALLS_PER_HOUR: at most that many Anthropic calls in any rolling hour;
- LLM_DAILY_BUDGET_USD: the day's spend (UTC) plus the worst case of the next call must
  stay within the budget.

Over a limit, the job is deferred (JobDeferred) until the limit frees up. Checking and
calling are not one transaction: replicas that check at the same moment can overshoot a
limit by at most their number of concurrent calls, which is accepted over serialising
every LLM call through a database lock.

`decide` is the pure part; the rest reads and writes the table (sync SQLAlchemy, meant to
run in a thread via asyncio.to_thread).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from models.llm_calls import LlmCall
from optimizer.config import Settings
from optimizer.db import READ_ONLY
from optimizer.errors import JobDeferred, PermanentJobError
from optimizer.prometheus import observe_llm_call

WINDOW = timedelta(hours=1)
MAX_ERROR_CHARS = 500
OUTCOMES = ("ok", "overloaded", "rate_limited", "error", "timeout")
# Error texts come from the API and the SDK; scrub anything shaped like a key anyway.
_KEY_LIKE = re.compile(r"sk-ant-[A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class CallRecord:
    purpose: str
    requested_model: str
    model: str
    provider: str
    outcome: str
    created_at: datetime
    job_id: int | None = None
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class UsageSnapshot:
    calls_last_hour: int
    # When the call that keeps the count at the limit was made: an hour after it, a call
    # is allowed again. None while under the limit.
    limiting_call_at: datetime | None
    spent_today_usd: float


@dataclass(frozen=True)
class LimitDecision:
    reason: str
    until: datetime
    permanent: bool = False  # the call can never fit, whatever the wait


def utc_midnight(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def decide(
    usage: UsageSnapshot,
    *,
    now: datetime,
    calls_per_hour: int,
    daily_budget_usd: float,
    estimate_usd: float,
) -> LimitDecision | None:
    """None when the next call may be made; otherwise why not and until when. Pure."""
    if usage.calls_last_hour >= calls_per_hour:
        oldest = usage.limiting_call_at or now
        return LimitDecision(
            f"LLM_CALLS_PER_HOUR={calls_per_hour} reached ({usage.calls_last_hour} Anthropic "
            "calls in the last hour); the job waits until the oldest of them is an hour old",
            until=max(oldest + WINDOW, now),
        )
    if estimate_usd > daily_budget_usd:
        return LimitDecision(
            f"this call's worst-case cost ${estimate_usd:.4f} exceeds LLM_DAILY_BUDGET_USD="
            f"${daily_budget_usd:.2f} on its own; raise the budget or ask for fewer or "
            "shorter variants",
            until=now,
            permanent=True,
        )
    if usage.spent_today_usd + estimate_usd > daily_budget_usd:
        return LimitDecision(
            f"LLM_DAILY_BUDGET_USD=${daily_budget_usd:.2f} would be exceeded: "
            f"${usage.spent_today_usd:.4f} spent today (UTC) plus up to ${estimate_usd:.4f} "
            "for this call; the job waits for the next UTC day",
            until=utc_midnight(now) + timedelta(days=1),
        )
    return None


def redact(text: str) -> str:
    return _KEY_LIKE.sub("sk-ant-[redacted]", text)


def _truncate(error: str | None) -> str | None:
    if error is None:
        return None
    error = redact(error)
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


def record_call(sessions: sessionmaker[Session], record: CallRecord) -> int:
    """Insert one `llm_calls` row and return its id."""
    if record.outcome not in OUTCOMES:
        raise ValueError(f"unknown outcome {record.outcome!r}")
    # Counted before the insert: the call was made (and paid for) even if the row is lost.
    observe_llm_call(record)
    row = LlmCall(
        job_id=record.job_id,
        purpose=record.purpose[:64],
        requested_model=record.requested_model[:100],
        model=record.model[:100],
        provider=record.provider,
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cache_creation_input_tokens=record.cache_creation_input_tokens,
        cache_read_input_tokens=record.cache_read_input_tokens,
        cost_usd=record.cost_usd,
        latency_ms=record.latency_ms,
        outcome=record.outcome,
        error=_truncate(record.error),
        created_at=record.created_at,
    )
    with sessions.begin() as session:
        session.add(row)
        session.flush()
        return row.id


def read_usage(
    session: Session, *, now: datetime, calls_per_hour: int, provider: str = "anthropic"
) -> UsageSnapshot:
    in_window = (LlmCall.provider == provider, LlmCall.created_at > now - WINDOW)
    count = session.scalar(select(func.count()).select_from(LlmCall).where(*in_window)) or 0
    limiting = None
    if count >= calls_per_hour:
        # The calls_per_hour-th newest call: once it leaves the window the count is below
        # the limit, even when concurrent replicas pushed it past the limit.
        limiting = session.scalar(
            select(LlmCall.created_at)
            .where(*in_window)
            .order_by(LlmCall.created_at.desc())
            .offset(calls_per_hour - 1)
            .limit(1)
        )
    spent = session.scalar(
        select(func.coalesce(func.sum(LlmCall.cost_usd), 0.0)).where(
            LlmCall.provider == provider, LlmCall.created_at >= utc_midnight(now)
        )
    )
    return UsageSnapshot(count, limiting, float(spent or 0.0))


def check_limits(
    sessions: sessionmaker[Session], settings: Settings, *, now: datetime, estimate_usd: float
) -> None:
    """Raise JobDeferred (or PermanentJobError) when the next call must not be made now."""
    with sessions() as session:
        # A read: on SQLite it must not queue behind the workers' write lock.
        session.connection(execution_options={READ_ONLY: True})
        usage = read_usage(session, now=now, calls_per_hour=settings.llm_calls_per_hour)
    decision = decide(
        usage,
        now=now,
        calls_per_hour=settings.llm_calls_per_hour,
        daily_budget_usd=settings.llm_daily_budget_usd,
        estimate_usd=estimate_usd,
    )
    if decision is None:
        return
    if decision.permanent:
        raise PermanentJobError(decision.reason)
    raise JobDeferred(decision.reason, until=decision.until)
