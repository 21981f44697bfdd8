"""/health (liveness from a cached snapshot) and /ready (database answers at the right
schema) against real databases, an unmigrated file and an unreachable server."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.experiments import Experiment
from models.insights import PatternInsight
from models.prompts import Prompt, PromptVersion
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import create_db_engine
from optimizer.health import HealthMonitor
from optimizer.http import probes
from optimizer.run_stats import STAT_NAMES, RunStats
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob

UNREACHABLE_URL = "postgresql+psycopg://nobody@127.0.0.1:1/x"
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
QUEUE_KEYS = {"pending", "running", "completed", "failed", "cancelled"}
TOTAL_KEYS = {
    "jobsCompleted",
    "jobsFailed",
    "experimentsCreated",
    "experimentsCompleted",
    "insights",
    "promptVersions",
}


@pytest.fixture
def unreachable_engine() -> Iterator[Engine]:
    engine = create_db_engine(UNREACHABLE_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def unmigrated_engine(tmp_path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    yield engine
    engine.dispose()


def add_rows(engine: Engine) -> None:
    """3 pending, 1 running, 2 completed, 1 failed, 1 cancelled jobs; 2 prompt versions,
    3 experiments (1 completed), 2 insights."""
    now = utcnow()
    ids = [
        queue.enqueue(engine, NewJob(type="full_cycle"), max_attempts=3, now=now)[0].id
        for _ in range(8)
    ]
    with engine.begin() as conn:
        for job_id, status in zip(
            ids[3:], ("running", "completed", "completed", "failed", "cancelled"), strict=True
        ):
            conn.execute(
                text("UPDATE optimization_jobs SET status = :s WHERE id = :i"),
                {"s": status, "i": job_id},
            )
    with Session(engine) as session, session.begin():
        prompts = [Prompt(name=f"p{i}") for i in range(3)]
        session.add_all(prompts)
        session.flush()
        session.add_all(
            [
                PromptVersion(
                    prompt_id=prompts[0].id, version=v, content=f"c{v}", content_hash=f"h{v}"
                )
                for v in (1, 2)
            ]
        )
        session.add_all(
            [
                Experiment(prompt_id=prompts[0].id, status="completed"),
                Experiment(prompt_id=prompts[1].id, status="running"),
                Experiment(prompt_id=prompts[2].id, status="stopped"),
            ]
        )
        session.add_all(
            [
                PatternInsight(
                    prompt_id=prompts[0].id, kind="theme", fingerprint=f"f{i}", title=f"t{i}"
                )
                for i in (1, 2)
            ]
        )


def assert_shape(body: dict[str, Any], *, served: bool = True) -> None:
    """`served`: the body as /health answers it, with the configuration problems that the
    HTTP layer adds to the monitor's report."""
    assert set(body) == {
        "status",
        "uptime",
        "stats",
        "timestamp",
        "totals",
        "queue",
        "database",
    } | ({"problems"} if served else set())
    assert body["status"] in ("healthy", "degraded")
    assert isinstance(body["uptime"], int) and body["uptime"] >= 0
    assert set(body["stats"]) == set(STAT_NAMES)
    assert all(isinstance(v, int) for v in body["stats"].values())
    assert STAMP.match(body["timestamp"])
    assert set(body["totals"]) == TOTAL_KEYS
    assert set(body["queue"]) == QUEUE_KEYS
    assert set(body["database"]) == {"ok", "checkedAt", "error"}
    if served:
        assert isinstance(body["problems"], list)
        assert all(set(p) == {"code", "message"} for p in body["problems"])


# --- /health ----------------------------------------------------------------------------


async def test_health_shape_on_a_fresh_database(engine, make_client):
    stats = RunStats()
    stats.add("jobsCompleted", 2)
    health = HealthMonitor(engine, stats, started_at=utcnow() - timedelta(seconds=42))
    assert await health.refresh_once() is True
    client = await make_client(engine, Settings(), health=health)
    resp = await client.get("/health")
    assert resp.status == 200 and resp.content_type == "application/json"
    body = await resp.json()
    assert_shape(body)
    assert body["status"] == "healthy"
    assert 42 <= body["uptime"] <= 60
    assert body["stats"] == {**dict.fromkeys(STAT_NAMES, 0), "jobsCompleted": 2}
    assert body["queue"] == dict.fromkeys(QUEUE_KEYS, 0)
    assert body["totals"] == dict.fromkeys(TOTAL_KEYS, 0)
    assert body["database"]["ok"] is True and body["database"]["error"] is None
    assert STAMP.match(body["database"]["checkedAt"])


async def test_counts_reflect_rows(engine):
    await asyncio.to_thread(add_rows, engine)
    health = HealthMonitor(engine, RunStats(), started_at=utcnow())
    assert await health.refresh_once() is True
    body = health.report(utcnow())
    assert_shape(body, served=False)
    assert body["queue"] == {
        "pending": 3,
        "running": 1,
        "completed": 2,
        "failed": 1,
        "cancelled": 1,
    }
    assert body["totals"] == {
        "jobsCompleted": 2,
        "jobsFailed": 1,
        "experimentsCreated": 3,
        "experimentsCompleted": 1,
        "insights": 2,
        "promptVersions": 2,
    }


async def test_health_never_touches_the_database(sqlite_engine, make_client):
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow())
    await health.refresh_once()
    checkouts: list[object] = []
    event.listen(sqlite_engine, "checkout", lambda *args: checkouts.append(args))
    client = await make_client(sqlite_engine, Settings(), health=health)
    for _ in range(5):
        assert (await client.get("/health")).status == 200
    assert checkouts == []
    await health.refresh_once()  # the listener does see a real read
    assert checkouts


async def test_unreachable_database_is_degraded_and_health_still_answers(
    unreachable_engine, make_client, caplog
):
    caplog.set_level(logging.INFO, logger="prompt_worker.health")
    health = HealthMonitor(unreachable_engine, RunStats(), started_at=utcnow())
    assert await health.refresh_once() is False
    assert await health.refresh_once() is False
    client = await make_client(unreachable_engine, Settings(), health=health)
    started = time.monotonic()
    resp = await client.get("/health")
    assert time.monotonic() - started < 1.0
    assert resp.status == 200
    body = await resp.json()
    assert_shape(body)
    assert body["status"] == "degraded"
    assert body["database"]["ok"] is False
    assert STAMP.match(body["database"]["checkedAt"])
    error = body["database"]["error"]
    assert error and "\n" not in error and len(error) <= 200
    assert body["queue"] == dict.fromkeys(QUEUE_KEYS, 0)
    # One line for the outage, not one per refresh, and no traceback.
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].exc_info is None


async def test_recovery_logs_and_turns_healthy(sqlite_engine, caplog):
    caplog.set_level(logging.INFO, logger="prompt_worker.health")
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow())
    with sqlite_engine.begin() as conn:
        conn.execute(text("ALTER TABLE ai_pattern_insights RENAME TO hidden"))
    assert await health.refresh_once() is False
    assert health.report(utcnow())["status"] == "degraded"
    with sqlite_engine.begin() as conn:
        conn.execute(text("ALTER TABLE hidden RENAME TO ai_pattern_insights"))
    assert await health.refresh_once() is True
    body = health.report(utcnow())
    assert body["status"] == "healthy" and body["database"]["error"] is None
    assert "database reachable again" in caplog.text


async def test_stale_snapshot_is_degraded(sqlite_engine):
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow(), refresh_seconds=5.0)
    assert health.report(utcnow())["status"] == "degraded"  # nothing checked yet
    assert health.report(utcnow())["database"]["error"] == "not checked yet"
    await health.refresh_once()
    now = utcnow()
    assert health.report(now + timedelta(seconds=14))["status"] == "healthy"
    late = health.report(now + timedelta(seconds=16))
    assert late["status"] == "degraded"
    assert late["database"]["ok"] is False
    assert "no successful check" in late["database"]["error"]


async def test_refresh_forever_survives_failures_and_is_cancellable(unreachable_engine):
    health = HealthMonitor(
        unreachable_engine, RunStats(), started_at=utcnow(), refresh_seconds=0.05
    )
    task = asyncio.create_task(health.refresh_forever())
    await asyncio.sleep(0.4)
    assert not task.done()  # failures were recorded, the loop goes on
    assert health.report(utcnow())["database"]["checkedAt"] is not None
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_refresh_forever_keeps_counts_current(sqlite_engine):
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow(), refresh_seconds=0.05)
    task = asyncio.create_task(health.refresh_forever())
    try:
        await asyncio.to_thread(
            queue.enqueue, sqlite_engine, NewJob(type="full_cycle"), max_attempts=3, now=utcnow()
        )
        deadline = time.monotonic() + 5
        while health.report(utcnow())["queue"]["pending"] != 1:
            assert time.monotonic() < deadline, "count not refreshed"
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# --- /ready -----------------------------------------------------------------------------


async def test_ready_on_a_migrated_database(engine, make_client):
    client = await make_client(engine, Settings())
    resp = await client.get("/ready")
    assert resp.status == 200
    assert await resp.json() == {"ready": True}


async def test_not_ready_on_an_unmigrated_database(unmigrated_engine, make_client):
    client = await make_client(unmigrated_engine, Settings())
    resp = await client.get("/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["ready"] is False
    assert "prompt-worker migrate" in body["reason"]


async def test_not_ready_on_an_unreachable_database(unreachable_engine, make_client):
    client = await make_client(unreachable_engine, Settings())
    resp = await client.get("/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["ready"] is False and body["reason"] == "database unavailable"


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections and never answers, like a hung database."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


async def test_ready_gives_up_on_a_hanging_database(silent_server, make_client, monkeypatch):
    monkeypatch.setattr(probes, "READY_TIMEOUT_SECONDS", 0.5)
    # libpq's shortest connect timeout, so the abandoned check thread ends soon after.
    engine = create_engine(
        f"postgresql+psycopg://nobody@127.0.0.1:{silent_server}/x",
        connect_args={"connect_timeout": 2},
    )
    try:
        client = await make_client(engine, Settings())
        started = time.monotonic()
        first, second = await asyncio.gather(client.get("/ready"), client.get("/ready"))
        assert time.monotonic() - started < 2.0
        for resp in (first, second):
            assert resp.status == 503
            assert "did not answer within 0.5 s" in (await resp.json())["reason"]
        # /health meanwhile answers at once from memory.
        started = time.monotonic()
        assert (await client.get("/health")).status == 200
        assert time.monotonic() - started < 0.5
    finally:
        await make_client.close()  # before the engine it uses is disposed
        engine.dispose()


# --- configuration problems -------------------------------------------------------------


TOKENS = Settings(admin_token="admin-token", ingest_token="ingest-token")


@pytest.mark.parametrize(
    "settings, codes",
    [
        (TOKENS, ["no_llm_key"]),  # the default provider, no key
        (TOKENS.model_copy(update={"anthropic_api_key": "sk-ant-test"}), []),
        (TOKENS.model_copy(update={"llm_provider": "offline"}), []),
        (Settings(llm_provider="offline"), ["no_admin_token", "no_ingest_token"]),
        (Settings(llm_provider="offline", admin_token="a"), ["no_ingest_token"]),
    ],
)
async def test_health_lists_configuration_problems(sqlite_engine, make_client, settings, codes):
    health = HealthMonitor(sqlite_engine, RunStats(), started_at=utcnow())
    assert await health.refresh_once() is True
    client = await make_client(sqlite_engine, settings, health=health)
    body = await (await client.get("/health")).json()
    assert_shape(body)
    assert [p["code"] for p in body["problems"]] == codes
    assert body["status"] == "healthy"  # liveness: a configuration problem is not an outage
    for problem in body["problems"]:
        if problem["code"] == "no_llm_key":
            assert problem["message"].startswith("no ANTHROPIC_API_KEY: variant generation is off")
            assert "LLM_PROVIDER=offline" in problem["message"]
        else:
            variable = problem["code"].removeprefix("no_").upper()
            assert problem["message"].startswith(f"{variable} is not set: ")
            assert f"set {variable} to open it" in problem["message"]


# --- database details only for admins and logs -------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


ADMIN = "admin-token-for-probes"


async def test_probe_errors_do_not_name_the_database_to_anyone(closed_port, make_client, caplog):
    caplog.set_level(logging.INFO)
    engine = create_db_engine(f"postgresql+psycopg://nobody@127.0.0.1:{closed_port}/x")
    try:
        health = HealthMonitor(engine, RunStats(), started_at=utcnow())
        assert await health.refresh_once() is False
        client = await make_client(engine, Settings(admin_token=ADMIN), health=health)
        wrong = {"Authorization": "Bearer not-the-admin-token"}
        for headers in ({}, wrong):
            ready = await client.get("/ready", headers=headers)
            live = await client.get("/health", headers=headers)
            assert ready.status == 503 and live.status == 200
            for text in (await ready.text(), await live.text()):
                assert "127.0.0.1" not in text and str(closed_port) not in text
            assert (await ready.json())["reason"] == "database unavailable"
            assert (await live.json())["database"]["error"] == "database unavailable"
        # The log has the detail, for whoever runs the service.
        [not_ready] = [r for r in caplog.records if r.getMessage() == "not ready"]
        assert str(closed_port) in not_ready.reason  # type: ignore[attr-defined]
        [refresh] = [r for r in caplog.records if r.name == "prompt_worker.health"]
        assert str(closed_port) in refresh.error  # type: ignore[attr-defined]
        # So does an admin, with the admin token.
        admin = {"Authorization": f"Bearer {ADMIN}"}
        ready_body = await (await client.get("/ready", headers=admin)).json()
        live_body = await (await client.get("/health", headers=admin)).json()
        assert ready_body["reason"].startswith("database unavailable: ")
        assert str(closed_port) in ready_body["reason"]
        assert str(closed_port) in live_body["database"]["error"]
    finally:
        engine.dispose()
