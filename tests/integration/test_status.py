"""`prompt-worker status` on seeded databases, as text and as JSON, and on an unreachable
database."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, insert, text, update
from sqlalchemy.engine import Engine

from models.experiments import Experiment, ExperimentAnalysis
from optimizer.cli import main
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.experiments import store
from optimizer.experiments.monitor import check_experiment
from optimizer.llm import usage
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from optimizer.status import excerpt
from tests.support.experiments import add_conversations, arm_ids, seed_prompt

LONG_ERROR = "RuntimeError: the upstream service answered 502 Bad Gateway " + "x" * 200


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(monkeypatch, capsys) -> Callable[..., Outcome]:
    for name in ("LLM_DAILY_BUDGET_USD", "LLM_CALLS_PER_HOUR"):
        monkeypatch.delenv(name, raising=False)

    def run(*argv: str) -> Outcome:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


def call(model: str, provider: str, when: Any, **numbers: Any) -> usage.CallRecord:
    return usage.CallRecord(
        purpose="variant_generation",
        requested_model=model,
        model=model,
        provider=provider,
        outcome="ok",
        created_at=when,
        **numbers,
    )


def seed(engine: Engine) -> dict[str, Any]:
    now = utcnow()
    ids = [
        queue.enqueue(engine, NewJob(type=t), max_attempts=3, now=now)[0].id
        for t in ("pattern_analysis", "variant_generation", "full_cycle")
    ]
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE optimization_jobs SET status = 'failed', attempts = 3, "
                "error = :e WHERE id = :i"
            ),
            {"e": LONG_ERROR, "i": ids[0]},
        )
        conn.execute(
            text("UPDATE optimization_jobs SET status = 'completed', attempts = 1 WHERE id = :i"),
            {"i": ids[1]},
        )
    seed_prompt(engine, "support-bot")
    sessions = session_factory(engine)
    with sessions.begin() as session:
        experiment_id = store.create_experiment(session, "support-bot", [2], now=now).id
    control, variant = arm_ids(engine, experiment_id)
    add_conversations(engine, experiment_id, control, 400, 120)
    add_conversations(engine, experiment_id, variant, 380, 130)
    with sessions.begin() as session:  # under the minimum runtime: checked, not decided
        outcome = check_experiment(session, experiment_id, now=now)
    assert outcome is not None and outcome.decision == "continue"
    for record in (
        call(
            "claude-a",
            "anthropic",
            now,
            input_tokens=1000,
            output_tokens=200,
            cache_creation_input_tokens=30,
            cache_read_input_tokens=500,
            cost_usd=0.25,
        ),
        call("claude-a", "anthropic", now, input_tokens=500, output_tokens=100, cost_usd=0.5),
        call("offline", "offline", now, input_tokens=7),
        # Yesterday (UTC): neither today's spend nor the last hour.
        call(
            "claude-a",
            "anthropic",
            usage.utc_midnight(now) - timedelta(hours=2),
            input_tokens=99_999,
            cost_usd=9.0,
        ),
    ):
        usage.record_call(sessions, record)
    return {"jobs": ids, "experiment": experiment_id, "arms": (control, variant)}


def test_status_json(cli, monkeypatch, sqlite_engine, sqlite_url):
    seeded = seed(sqlite_engine)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    monkeypatch.setenv("LLM_DAILY_BUDGET_USD", "5")
    result = cli("status", "--json")
    assert result.code == 0, result.err
    body = json.loads(result.out)
    assert body["queue"] == {
        "pending": 1,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "cancelled": 0,
    }
    jobs = body["recent_jobs"]
    assert [j["id"] for j in jobs] == seeded["jobs"][::-1]  # newest first
    failed = jobs[-1]
    assert (failed["type"], failed["status"], failed["attempts"]) == (
        "pattern_analysis",
        "failed",
        3,
    )
    assert failed["error"] == excerpt(LONG_ERROR) and failed["error"].endswith("...")
    assert 0 <= failed["age_seconds"] < 60

    [experiment] = body["experiments"]
    assert (experiment["id"], experiment["prompt"], experiment["decision"]) == (
        seeded["experiment"],
        "support-bot",
        "continue",
    )
    assert experiment["checked_at"] is not None
    control, variant = experiment["arms"]
    assert control["is_control"] and control["version"] == 1
    assert control["conversations"] == 400 and control["diff"] is None
    assert variant["version"] == 2 and variant["conversations"] == 380
    expected = 130 / 380 - 120 / 400
    assert variant["diff"] == pytest.approx(expected)
    assert variant["low"] < variant["diff"] < variant["high"]
    assert variant["level"] == pytest.approx(0.90)

    assert body["llm"] == {
        "calls_today": 3,
        "input_tokens": 1507,
        "output_tokens": 300,
        "cache_write_tokens": 30,
        "cache_read_tokens": 500,
        "cost_today_usd": 0.75,
        "daily_budget_usd": 5.0,
        "calls_last_hour": 2,
        "calls_per_hour": 100,
    }


def test_status_text(cli, monkeypatch, sqlite_engine, sqlite_url):
    seeded = seed(sqlite_engine)
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    result = cli("status")
    assert result.code == 0, result.err
    out = result.out
    assert "Queue: pending 1  running 0  completed 1  failed 1  cancelled 0" in out
    failed_line = next(
        line for line in out.splitlines() if line.strip().startswith(f"{seeded['jobs'][0]} ")
    )
    assert "pattern_analysis" in failed_line and "3/3" in failed_line
    assert excerpt(LONG_ERROR) in failed_line
    assert f"#{seeded['experiment']} support-bot RUNNING (metric success" in out
    assert ": continue" in out
    variant_line = next(line for line in out.splitlines() if line.split()[:2] == ["2", "variant"])
    assert "380" in variant_line and "90.0% [" in variant_line
    assert "calls 3, tokens in 1,507 / out 300" in out
    assert "cost $0.7500 of $20.00 LLM_DAILY_BUDGET_USD (3.8%)" in out
    assert "Anthropic calls in the last hour: 2 of 100 LLM_CALLS_PER_HOUR" in out


def test_status_on_an_empty_database(cli, monkeypatch, sqlite_engine, sqlite_url):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    result = cli("status")
    assert result.code == 0, result.err
    assert "no jobs yet" in result.out and "no running or paused experiments" in result.out


@pytest.mark.parametrize(
    "url, said",
    [
        (
            "postgresql+psycopg://nobody@127.0.0.1:1/x",  # nothing listens there
            "error: cannot reach the database",
        ),
        (
            "sqlite:////nonexistent-dir/for/status/test.db",  # the directory does not exist
            "error: no database at /nonexistent-dir/for/status/test.db",
        ),
    ],
)
def test_unreachable_database_is_a_clear_error(cli, monkeypatch, url, said):
    monkeypatch.setenv("DATABASE_URL", url)
    result = cli("status")
    assert result.code == 1
    assert result.out == ""
    assert result.err.startswith(said)
    assert "Traceback" not in result.err and len(result.err.splitlines()) == 1
    assert cli("status", "--json").code == 1


def _experiment_in_state(engine: Engine, prompt: str, status: str, reason: str | None) -> int:
    seed_prompt(engine, prompt)
    with session_factory(engine).begin() as session:
        experiment_id = store.create_experiment(session, prompt, [2], now=utcnow()).id
    with engine.begin() as conn:
        conn.execute(
            update(Experiment)
            .where(Experiment.id == experiment_id)
            .values(status=status, decision_reason=reason)
        )
    return experiment_id


def test_paused_experiments_are_shown_with_their_state(cli, monkeypatch, sqlite_engine, sqlite_url):
    """A paused experiment waits for a person: status must show it, and why it paused."""
    running = _experiment_in_state(sqlite_engine, "bot-running", "running", None)
    paused = _experiment_in_state(
        sqlite_engine,
        "bot-paused",
        "paused",
        "Paused for a sample ratio mismatch: check assignment.",
    )
    _experiment_in_state(sqlite_engine, "bot-done", "completed", "Inconclusive.")
    _experiment_in_state(sqlite_engine, "bot-stopped", "stopped", "stopped by admin")
    monkeypatch.setenv("DATABASE_URL", sqlite_url)

    body = json.loads(cli("status", "--json").out)
    shown = {e["id"]: e for e in body["experiments"]}
    assert set(shown) == {running, paused}
    assert shown[paused]["status"] == "paused" and shown[running]["status"] == "running"
    assert shown[paused]["reason"].startswith("Paused for a sample ratio mismatch")

    out = cli("status").out
    assert f"#{paused} bot-paused" in out and f"#{running} bot-running" in out
    paused_head = next(line for line in out.splitlines() if f"#{paused} " in line)
    assert "PAUSED" in paused_head
    assert "Paused for a sample ratio mismatch: check assignment." in out
    assert "bot-done" not in out and "bot-stopped" not in out


@pytest.mark.parametrize(
    "env, problem",
    [
        ({}, True),  # the default provider and no key: variant generation cannot run
        ({"ANTHROPIC_API_KEY": "sk-ant-test"}, False),
        ({"LLM_PROVIDER": "offline"}, False),
    ],
)
def test_configuration_problems_are_shown(
    cli, monkeypatch, sqlite_engine, sqlite_url, env, problem
):
    monkeypatch.setenv("DATABASE_URL", sqlite_url)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    body = json.loads(cli("status", "--json").out)
    out = cli("status").out
    if problem:
        [found] = body["problems"]
        assert found["code"] == "no_llm_key"
        assert found["message"].startswith("no ANTHROPIC_API_KEY: variant generation is off")
        assert "LLM_PROVIDER=offline" in found["message"]
        assert f"Configuration problems\n  - {found['message']}" in out
    else:
        assert body["problems"] == []
        assert "Configuration problems" not in out


def test_latest_analyses_match_one_by_one_in_one_query(engine: Engine) -> None:
    ids = [_experiment_in_state(engine, f"p{i}", "running", None) for i in range(4)]
    with session_factory(engine).begin() as session:
        for n, experiment_id in enumerate(ids[:3]):  # the last one has no check
            for k in range(n + 1):
                session.execute(
                    insert(ExperimentAnalysis).values(
                        experiment_id=experiment_id,
                        decision="continue",
                        reason=f"check {k}",
                        statistics=json.dumps({"k": k, "x": None}),
                    )
                )
    statements: list[str] = []
    with session_factory(engine)() as session:
        expected = {i: store.latest_analysis(session, i) for i in ids}

        def count(*args: Any) -> None:
            statements.append(args[2])

        event.listen(engine, "before_cursor_execute", count)
        try:
            latest = store.latest_analyses(session, ids)
        finally:
            event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1
    assert latest == {i: a for i, a in expected.items() if a is not None}
    assert [latest[i].reason for i in ids[:3]] == ["check 0", "check 1", "check 2"]
    assert ids[3] not in latest
