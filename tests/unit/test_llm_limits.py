"""The pure decisions behind the LLM limits: hourly calls, daily budget, rate-limit waits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from optimizer.llm.anthropic_client import retry_after_seconds
from optimizer.llm.usage import LimitDecision, UsageSnapshot, decide, utc_midnight

NOW = datetime(2026, 11, 22, 15, 30, tzinfo=UTC)
TOMORROW = datetime(2026, 11, 23, tzinfo=UTC)


def check(
    calls: int = 0,
    limiting: datetime | None = None,
    spent: float = 0.0,
    *,
    per_hour: int = 10,
    budget: float = 20.0,
    estimate: float = 0.5,
) -> LimitDecision | None:
    return decide(
        UsageSnapshot(calls, limiting, spent),
        now=NOW,
        calls_per_hour=per_hour,
        daily_budget_usd=budget,
        estimate_usd=estimate,
    )


def test_under_every_limit_the_call_goes_ahead() -> None:
    assert check(calls=9, spent=19.5, estimate=0.5) is None  # exactly at the budget is fine


def test_hourly_limit_defers_until_the_limiting_call_leaves_the_window() -> None:
    oldest = NOW - timedelta(minutes=50)
    decision = check(calls=10, limiting=oldest)
    assert decision is not None and not decision.permanent
    assert decision.until == oldest + timedelta(hours=1) == NOW + timedelta(minutes=10)
    assert "LLM_CALLS_PER_HOUR=10" in decision.reason


def test_hourly_limit_over_shot_still_defers() -> None:
    decision = check(calls=14, limiting=NOW - timedelta(minutes=5))
    assert decision is not None and decision.until == NOW + timedelta(minutes=55)


def test_hourly_limit_never_defers_into_the_past() -> None:
    decision = check(calls=10, limiting=NOW - timedelta(hours=2))
    assert decision is not None and decision.until == NOW


def test_hourly_limit_is_checked_before_the_budget() -> None:
    decision = check(calls=10, limiting=NOW - timedelta(minutes=1), spent=100.0)
    assert decision is not None and "LLM_CALLS_PER_HOUR" in decision.reason


def test_budget_defers_until_the_next_utc_midnight() -> None:
    decision = check(spent=19.6, estimate=0.5)
    assert decision is not None and not decision.permanent
    assert decision.until == TOMORROW
    assert "LLM_DAILY_BUDGET_USD=$20.00" in decision.reason and "19.6" in decision.reason


def test_a_call_that_can_never_fit_the_budget_is_permanent() -> None:
    decision = check(spent=0.0, budget=0.25, estimate=0.4)
    assert decision is not None and decision.permanent
    assert "LLM_DAILY_BUDGET_USD" in decision.reason


def test_midnight_is_computed_in_utc() -> None:
    # 23:30 UTC is already the next day at UTC+5; the budget day is still the UTC one.
    late_elsewhere = datetime(2026, 11, 22, 23, 30, tzinfo=UTC).astimezone(
        timezone(timedelta(hours=5))
    )
    assert utc_midnight(late_elsewhere) == datetime(2026, 11, 22, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "120"}, 120.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "120"}, 0.25),
        ({"retry-after": "Sun, 22 Nov 2026 15:32:00 GMT"}, 120.0),
        ({"retry-after": "soon"}, None),
        ({}, None),
    ],
)
def test_retry_after_header_forms(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers, now=NOW) == seconds
