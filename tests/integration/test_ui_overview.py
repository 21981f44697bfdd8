"""The dashboard's overview (/ui/) through the real app on SQLite and PostgreSQL: health and
run stats, the queue, the live experiments with their primary interval, the recent
decisions with their reasons in full, LLM calls and spend against the limits, and the
configuration problems; the same number of queries whatever the size of the data."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from markupsafe import escape
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from models.experiments import ExperimentAnalysis
from models.llm_calls import LlmCall
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.experiments import store
from optimizer.health import HealthMonitor
from optimizer.run_stats import RunStats
from optimizer.status import read_status
from tests.support.http_client import TEST_SETTINGS, ClientMaker
from tests.support.ui_client import SEEDS, html_of, query_count, seeded_client, signed_in
from tests.support.ui_seed import SCRIPT, Seeded

# The overview's statements, the session lookup included: status.read_status lists the
# running and the paused experiments in two passes of five statements each (see the report
# of issue 14, piece D3); the rest is one statement per figure.
OVERVIEW_QUERIES = 12


@pytest.mark.parametrize("seed", list(SEEDS))
async def test_the_overview_on_each_seed(
    engine: Engine, make_client: ClientMaker, seed: str
) -> None:
    client, seeded = await seeded_client(make_client, engine, seed)
    text = await html_of(client, "/ui/")
    assert "<h1>Overview</h1>" in text and 'aria-current="page">Overview' in text
    for heading in ("Health", "This process since start", "LLM calls today", "Queue"):
        assert f">{heading}</h2>" in text
    status = await asyncio.to_thread(read_status, engine, TEST_SETTINGS, utcnow())
    for name, count in status.queue.items():
        assert f'<span class="label">{name}</span><span class="value">{count:,}</span>' in text
    if seeded.running_experiment_id is None:
        assert "No running or paused experiments" in text
        assert "No decisions yet" in text
    if seeded.pending_job_id is None:
        assert "No jobs yet" in text
        return
    # Every live experiment, linked, with its arms; the recent jobs, linked.
    for line in status.experiments:
        assert f'<a href="/ui/experiments/{line.id}">#{line.id}</a>' in text
        assert f'<a href="/ui/prompts/{line.prompt}">{line.prompt}</a>' in text
    assert {line.status for line in status.experiments} == {"running", "paused"}
    for job in status.recent_jobs:
        assert f'<a href="/ui/jobs/{job.id}">#{job.id}</a>' in text
    assert f'href="/ui/jobs/{seeded.failed_job_id}#error">full error</a>' in text


async def test_live_experiments_show_the_primary_interval(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, seeded = await seeded_client(make_client, engine)
    text = await html_of(client, "/ui/")
    status = await asyncio.to_thread(read_status, engine, TEST_SETTINGS, utcnow())
    running = next(e for e in status.experiments if e.id == seeded.running_experiment_id)
    assert running.primary_metric in text
    checked = [a for a in running.arms if a.diff is not None]
    assert checked, "the seed's running experiment has a checked variant"
    for arm in checked:
        assert arm.low is not None and arm.high is not None
        assert f"{arm.diff:+.3g} abs." in text
        assert f"({arm.low:+.3g} to {arm.high:+.3g}" in text
    paused = next(e for e in status.experiments if e.status == "paused")
    assert paused.reason and str(escape(paused.reason)) in text


async def test_recent_decisions_show_each_reason_in_full_and_escaped(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, _ = await seeded_client(make_client, engine)
    long_reason = f"Stop v4 {SCRIPT}: " + "worse than control on every metric; " * 40

    def rewrite() -> None:
        with session_factory(engine).begin() as session:
            newest = session.scalar(
                select(ExperimentAnalysis.id)
                .where(ExperimentAnalysis.decision != "continue")
                .order_by(ExperimentAnalysis.id.desc())
                .limit(1)
            )
            session.execute(
                update(ExperimentAnalysis)
                .where(ExperimentAnalysis.id == newest)
                .values(reason=long_reason)
            )

    await asyncio.to_thread(rewrite)
    text = await html_of(client, "/ui/")
    assert SCRIPT not in text
    assert f"<td>{escape(long_reason)}</td>" in text
    with session_factory(engine)() as session:
        decisions = store.recent_decisions(session, limit=10)
    assert decisions
    for decision in decisions:
        assert f'<a href="/ui/experiments/{decision.experiment_id}">' in text
        assert f'class="badge badge-{decision.decision}"' in text


async def test_llm_spend_and_calls_against_the_limits(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, _ = await seeded_client(
        make_client, engine, "empty", llm_daily_budget_usd=1.0, llm_calls_per_hour=3
    )

    def add_calls() -> None:
        with session_factory(engine).begin() as session:
            for k in range(3):
                session.add(
                    LlmCall(
                        purpose="variant_generation",
                        requested_model="sonnet",
                        model="claude-sonnet-4-5",
                        provider="anthropic",
                        input_tokens=12_000 + k,
                        output_tokens=900,
                        cost_usd=0.5,
                        outcome="ok",
                        created_at=utcnow(),
                    )
                )

    text = await html_of(client, "/ui/")
    assert "$0.00 of $1.00</span>" in text and "budget reached" not in text
    assert "<code>LLM_DAILY_BUDGET_USD</code>" in text and "<code>LLM_CALLS_PER_HOUR</code>" in text
    await asyncio.to_thread(add_calls)
    text = await html_of(client, "/ui/")
    assert "$1.50 of $1.00</span>" in text and "budget reached" in text
    assert "3 of 3</span>" in text and "limit reached" in text
    assert "36,003 in, 2,700 out" in text
    assert '<progress max="100" value="100.0">' in text  # capped: never past the end


async def test_health_and_run_stats_come_from_the_monitor(
    engine: Engine, make_client: ClientMaker
) -> None:
    stats = RunStats()
    health = HealthMonitor(engine, stats, utcnow())
    client, _ = await seeded_client(make_client, engine, "one_version", stats=stats, health=health)
    text = await html_of(client, "/ui/")
    assert "degraded" in text and "not checked yet" in text  # no refresh has run yet
    assert await health.refresh_once()
    stats.add("jobsCompleted", 1234)
    stats.add("variantsGenerated", 3)
    text = await html_of(client, "/ui/")
    assert "healthy" in text and "reachable" in text
    assert '<dt>Jobs completed</dt><dd class="num">1,234</dd>' in text
    assert '<dt>Variants generated</dt><dd class="num">3</dd>' in text


@pytest.mark.parametrize(
    ("settings", "shown", "not_shown"),
    [
        ({}, ["no ANTHROPIC_API_KEY"], ["INGEST_TOKEN is not set"]),
        (
            {"ingest_token": None, "anthropic_api_key": "sk-ant-test-key"},
            ["INGEST_TOKEN is not set"],
            ["no ANTHROPIC_API_KEY"],
        ),
        ({"llm_provider": "offline", "anthropic_api_key": None}, [], ["Configuration:"]),
    ],
)
async def test_configuration_problems_are_warnings(
    engine: Engine,
    make_client: ClientMaker,
    settings: dict[str, Any],
    shown: list[str],
    not_shown: list[str],
) -> None:
    client, _ = await seeded_client(make_client, engine, "empty", **settings)
    text = await html_of(client, "/ui/")
    for words in shown:
        assert re.search(
            rf'<p class="warning" role="alert">[^<]*<strong>[^<]*</strong> {words}', text
        )
    for words in not_shown:
        assert words not in text


async def test_read_only_overview_has_no_forms_but_logout(
    engine: Engine, make_client: ClientMaker
) -> None:
    client, _ = await seeded_client(make_client, engine, ui_access="read-only")
    text = await html_of(client, "/ui/")
    assert re.findall(r'<form method="post" action="([^"]+)"', text) == ["/ui/logout"]
    assert "/ui/jobs/new" not in text


async def test_query_count_does_not_grow_with_the_data_large_seed(
    large_seed: tuple[Engine, Seeded], sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    """SLOW: the large seed (the module fixture, SQLite only)."""
    small, _ = await seeded_client(make_client, sqlite_engine)
    large = await signed_in(make_client, large_seed[0])
    small_count = await query_count(small, "/ui/")
    assert small_count == await query_count(large, "/ui/") <= OVERVIEW_QUERIES
