"""The routing snapshot on SQLite and PostgreSQL (optimizer.routing_refresh): the stamp
triggers move exactly on changes that can move an answer; this process's own commits are
seen by the next request; a write by another process reaches resolve within the bound;
resolve and GET /v1/config answer from memory, 503 before the first snapshot and from the
last one while the database fails. Three replicas: tests/faults/test_routing_replicas.py."""

from __future__ import annotations

import asyncio
import json
import re
import sys
import threading
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from models.experiments import Experiment
from optimizer import client_config, routing_refresh, routing_writes
from optimizer.clock import utcnow
from optimizer.db import create_db_engine
from optimizer.errors import DatabaseUnavailable
from optimizer.experiments.monitor import check_experiment
from optimizer.http.errors import DB_UNAVAILABLE_MESSAGE
from optimizer.http.routing_app import ROUTING_CACHE
from tests.integration.test_ingest import World, seed
from tests.support.http_client import ADMIN_TOKEN, INGEST_TOKEN, TEST_SETTINGS, ClientMaker

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}
SETTINGS = TEST_SETTINGS.model_copy(update={"app_rate_limit_per_second": 0})
WATCHED = ("prompts", "ai_prompt_versions", "ai_ab_experiments", "ai_ab_experiment_arms")
# Waiting longer than the bound only to report a miss clearly, never to pass one.
DEADLINE_SECONDS = routing_refresh.STALENESS_BOUND_SECONDS + 10


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, SETTINGS)


def stamp(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT value FROM routing_stamp WHERE id = 1")).scalar_one())


def execute(engine: Engine, *statements: str) -> None:
    """The statements in one transaction, as an admin types them."""
    with engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))


async def resolved(client: TestClient, unit: str, name: str = "support-bot") -> Any:
    resp = await client.get(f"/v1/prompts/{name}/resolve", params={"unit_id": unit}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def config(client: TestClient) -> tuple[str, bytes]:
    resp = await client.get("/v1/config", headers=AUTH)
    assert resp.status == 200, await resp.text()
    return resp.headers["ETag"], await resp.read()


# --- the stamp ----------------------------------------------------------------------------


def test_every_trigger_exists_at_head(engine: Engine) -> None:
    if engine.dialect.name == "postgresql":
        sql = "SELECT tgname FROM pg_trigger WHERE tgname LIKE 'routing_changed_%'"
        events = ("rows", "update", "truncate")
    else:
        sql = "SELECT name FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'routing%'"
        events = ("insert", "delete", "update")
    with engine.connect() as conn:
        found = set(conn.execute(text(sql)).scalars())
    assert found == {f"routing_changed_{table}_{e}" for table in WATCHED for e in events}


def test_the_stamp_moves_exactly_on_changes_that_can_move_an_answer(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    arm, version, experiment = world.arms[2], world.versions[2], world.experiment_id
    moving = [
        f"UPDATE ai_ab_experiment_arms SET weight = 2.5 WHERE id = {arm}",
        f"UPDATE ai_ab_experiment_arms SET status = 'stopped' WHERE id = {arm}",
        f"UPDATE ai_prompt_versions SET content = 'edited' WHERE id = {version}",
        f"UPDATE ai_ab_experiments SET status = 'paused' WHERE id = {experiment}",
        "UPDATE prompts SET name = 'renamed'",
        "INSERT INTO prompts (name) VALUES ('another')",
        "DELETE FROM prompts WHERE name = 'another'",
    ]
    still = [
        f"UPDATE ai_ab_experiments SET decision_reason = 'noted' WHERE id = {experiment}",
        f"UPDATE ai_ab_experiments SET status = status WHERE id = {experiment}",
        f"UPDATE ai_ab_experiment_arms SET stopped_reason = 'why' WHERE id = {arm}",
        f"UPDATE ai_prompt_versions SET change_notes = 'notes' WHERE id = {version}",
        "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')",
    ]
    for statement in moving:
        before = stamp(engine)
        execute(engine, statement)
        assert stamp(engine) > before, statement
    for statement in still:
        before = stamp(engine)
        execute(engine, statement)
        assert stamp(engine) == before, statement
    before = stamp(engine)
    execute(engine, "UPDATE ai_ab_experiment_arms SET weight = 3", "UPDATE prompts SET name = 'x'")
    if engine.dialect.name == "postgresql":
        assert stamp(engine) == before + 1  # once per transaction, at commit
    else:
        assert stamp(engine) > before


# --- this process's own commits -----------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "routing"),
    [
        ("INSERT INTO prompts (name) VALUES (?)", True),
        ('  update "ai_ab_experiment_arms" SET status = ?', True),
        ("DELETE FROM ai_prompt_versions WHERE id = ?", True),
        ("INSERT OR REPLACE INTO ai_ab_experiments (id) VALUES (?)", True),
        ("TRUNCATE TABLE prompts CASCADE", True),
        ("WITH x AS (SELECT 1) UPDATE ai_ab_experiments SET status = 'paused'", True),
        ("INSERT INTO conversations (prompt_id) SELECT id FROM prompts", False),
        ("INSERT INTO ai_ab_experiment_analyses (experiment_id) VALUES (?)", False),
        ("UPDATE optimization_jobs SET status = 'pending'", False),
        ("SELECT * FROM prompts", False),
        # An UPDATE counts when it sets a column an answer depends on, as the triggers do.
        ("UPDATE ai_ab_experiments SET rolled_up_to=?, rollup_caps=? WHERE id = ?", False),
        (
            "UPDATE ai_ab_experiments SET rolled_up_to=%(rolled_up_to)s::BIGINT, "
            "rollup_caps=%(rollup_caps)s::VARCHAR WHERE ai_ab_experiments.id = "
            "%(ai_ab_experiments_id)s::BIGINT",
            False,
        ),
        ("UPDATE ai_ab_experiments SET metric_caps=%(metric_caps)s::VARCHAR WHERE id = 1", False),
        (
            "UPDATE ai_ab_experiments SET decision_reason = 'it''s done', ended_at = NULL, "
            "winner_version_id = 3",
            False,
        ),
        (
            "UPDATE ai_ab_experiments SET ended_at=%(ended_at)s::TIMESTAMP WITH TIME ZONE "
            "WHERE ai_ab_experiments.id = %(id)s::BIGINT",
            False,
        ),
        ("UPDATE ai_ab_experiment_arms SET stopped_reason = :why", False),
        ("UPDATE ai_prompt_versions SET change_notes = $1 RETURNING id", False),
        ("UPDATE ai_ab_experiments SET decision_reason = ?, status = ? WHERE id = ?", True),
        (
            "UPDATE ai_ab_experiments SET status=%(status)s::VARCHAR(20) WHERE id = 1",
            True,
        ),
        ('UPDATE ai_prompt_versions SET "content" = ?', True),
        ("UPDATE public.prompts SET name = 'x'", True),
        ("UPDATE ONLY ai_ab_experiment_arms SET weight = 2", True),
        # Not understood (an expression, an alias, no SET list read): counted.
        ("UPDATE ai_ab_experiments SET rolled_up_to = rolled_up_to + 1", True),
        ("UPDATE ai_ab_experiments AS e SET decision_reason = ?", True),
        ("UPDATE ai_ab_experiments SET decision_reason = (SELECT 'x')", True),
    ],
)
def test_which_statements_write_routing(statement: str, routing: bool) -> None:
    assert routing_writes.writes_routing(statement) is routing


def test_a_commit_that_wrote_routing_raises_the_generation(engine: Engine) -> None:
    routing_writes.watch()
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    before = routing_writes.generation()
    execute(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")
    with engine.connect() as conn:
        conn.execute(
            text(f"UPDATE ai_ab_experiment_arms SET weight = 5 WHERE id = {world.arms[2]}")
        )
        conn.rollback()
    assert routing_writes.generation() == before
    execute(engine, f"UPDATE ai_ab_experiment_arms SET weight = 5 WHERE id = {world.arms[2]}")
    assert routing_writes.generation() > before


def test_the_routing_columns_are_those_the_triggers_watch(engine: Engine) -> None:
    """routing_writes.ROUTING_COLUMNS repeats migration 0007's lists (migrations import no
    service code): what this process counts is what the stamp counts."""
    if engine.dialect.name == "postgresql":
        sql = (
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE tgname LIKE 'routing_changed_%_update'"
        )
    else:
        sql = "SELECT sql FROM sqlite_master WHERE name LIKE 'routing_changed_%_update'"
    with engine.connect() as conn:
        definitions = list(conn.execute(text(sql)).scalars())
    watched = {}
    for definition in definitions:
        found = re.search(r"UPDATE OF (.+?) ON (?:public\.)?(\w+)", definition, re.DOTALL)
        assert found is not None, definition
        watched[found.group(2)] = {c.strip() for c in found.group(1).split(",")}
    assert watched == routing_writes.ROUTING_COLUMNS


def test_an_experiment_check_is_not_a_routing_write(engine: Engine) -> None:
    """A monitoring check writes the rollup's watermark and caps and an analysis row; none
    moves an answer, so the next resolve must not wait for a reload."""
    routing_writes.watch()
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    before, stamped = routing_writes.generation(), stamp(engine)
    for _ in range(2):  # the first pass and an incremental one
        with Session(engine) as session, session.begin():
            outcome = check_experiment(session, world.experiment_id, now=utcnow())
        assert outcome is not None and outcome.decision == "continue"
    with Session(engine) as session:
        experiment = session.get(Experiment, world.experiment_id)
        assert experiment is not None and experiment.rolled_up_to is not None
    assert (routing_writes.generation(), stamp(engine)) == (before, stamped)


def test_a_failed_commit_does_not_raise_the_generation(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    routing_writes.watch()
    world = seed(engine, active=1)
    before = routing_writes.generation()

    def failing_commit(dbapi_connection: Any) -> None:
        raise engine.dialect.loaded_dbapi.OperationalError("the commit failed")

    monkeypatch.setattr(engine.dialect, "do_commit", failing_commit)
    edit = f"UPDATE ai_prompt_versions SET content = 'lost' WHERE id = {world.versions[1]}"
    with pytest.raises(OperationalError):
        execute(engine, edit)
    monkeypatch.undo()
    execute(engine, "INSERT INTO optimization_jobs (type) VALUES ('full_cycle')")  # reuses it
    assert routing_writes.generation() == before
    with engine.connect() as conn:
        content = conn.execute(
            text(f"SELECT content FROM ai_prompt_versions WHERE id = {world.versions[1]}")
        ).scalar_one()
    assert content == "support-bot prompt v1"


async def test_an_http_write_is_read_by_the_next_resolve(
    client: TestClient, engine: Engine
) -> None:
    seed(engine, active=1)
    assert (await resolved(client, "u1"))["version"] == 1
    resp = await client.post(
        "/prompts/support-bot/rollback",
        json={"version": 3},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert resp.status == 200, await resp.text()
    assert (await resolved(client, "u1"))["version"] == 3


# --- answered from memory ------------------------------------------------------------------


async def test_resolve_touches_no_database(client: TestClient, engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 3.0)])
    await resolved(client, "warm-up")
    seen: list[tuple[str, str]] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append((threading.current_thread().name, statement))

    # Every engine: the polls use the cache's own (routing_refresh.reader_engine).
    event.listen(Engine, "before_cursor_execute", note)
    try:
        answers = [await resolved(client, f"unit-{i}") for i in range(300)]
        await asyncio.sleep(routing_refresh.POLL_SECONDS * 2)  # at least one stamp poll
    finally:
        event.remove(Engine, "before_cursor_execute", note)
    assert {a["experiment_id"] for a in answers} == {world.experiment_id}
    assert seen, "the listener saw no statement, so it would not see resolve's either"
    # On the cache's own thread (not the loop's, nor its default executor shared with
    # ingest and jobs): the stamp polls (SQLite's BEGIN DEFERRED opens their
    # transactions), nothing else.
    assert {thread.split("_")[0] for thread, _ in seen} == {"routing"}, seen
    reads = [statement for _, statement in seen if statement != "BEGIN DEFERRED"]
    assert all("routing_stamp" in statement for statement in reads), reads


async def test_the_etag_changes_exactly_when_the_snapshot_changes(
    client: TestClient, engine: Engine
) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    tag, body = await config(client)
    assert tag == client.app[ROUTING_CACHE].snapshot.etag  # type: ignore[union-attr]
    # A local write the snapshot does not depend on: the same snapshot, not even re-encoded.
    execute(
        engine,
        f"UPDATE ai_ab_experiments SET decision_reason = 'x' WHERE id = {world.experiment_id}",
    )
    assert await config(client) == (tag, body)
    execute(engine, f"UPDATE ai_ab_experiment_arms SET weight = 2 WHERE id = {world.arms[2]}")
    moved, moved_body = await config(client)
    assert moved != tag and moved_body != body
    assert (await config(client))[0] == moved
    execute(engine, f"UPDATE ai_ab_experiment_arms SET weight = 1 WHERE id = {world.arms[2]}")
    back, back_body = await config(client)
    assert back == tag and back_body != body  # the same routing, read again (generated_at)


async def test_never_loaded_answers_503(make_client: ClientMaker, tmp_path: Any) -> None:
    missing = create_db_engine(f"sqlite:///{tmp_path / 'missing.db'}", create_missing=False)
    try:
        client = await make_client(missing, SETTINGS)
        for path in ("/v1/prompts/support-bot/resolve?unit_id=u", "/v1/config"):
            resp = await client.get(path, headers=AUTH)
            assert resp.status == 503
            assert resp.headers["Retry-After"]
            assert await resp.json() == {"error": DB_UNAVAILABLE_MESSAGE, "field": None}
    finally:
        missing.dispose()


async def test_the_last_snapshot_answers_while_the_database_fails(
    client: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = seed(engine, active=1)
    assert (await resolved(client, "u"))["version"] == 1

    def unreachable(*args: Any) -> routing_refresh.Snapshot:
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    # No reload in flight (one started by a poll before the patch would read the write):
    # none starts before the next await, and the write below does not await.
    await client.app[ROUTING_CACHE].refresh()
    monkeypatch.setattr(routing_refresh, "load", unreachable)
    execute(engine, f"UPDATE ai_prompt_versions SET content = 'new' WHERE id = {world.versions[1]}")
    assert (await resolved(client, "u"))["content"] == "support-bot prompt v1"
    monkeypatch.undo()
    # The refresh loop retries (requests answer from the last snapshot meanwhile).
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (await resolved(client, "u"))["content"] != "new":
        assert time.monotonic() < deadline, "the refresh loop did not catch up"
        await asyncio.sleep(0.02)


async def test_a_weight_that_cannot_split_units_is_ignored_not_a_500(
    client: TestClient, engine: Engine
) -> None:
    """PostgreSQL's `weight > 0` check lets NaN and infinity through (SQLite infinity):
    resolve serves the active version, as for an experiment it ignores, and the
    configuration leaves the experiment out (JSON has no NaN)."""
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    values = ("'NaN'", "'Infinity'") if engine.dialect.name == "postgresql" else ("9e999",)
    for value in values:
        execute(
            engine, f"UPDATE ai_ab_experiment_arms SET weight = {value} WHERE id = {world.arms[2]}"
        )
        answer = await resolved(client, "u1")
        assert (answer["version"], answer["experiment_id"], answer["arm"]) == (1, None, None)
        _, body = await config(client)
        assert json.loads(body)["prompts"][0]["experiment"] is None


# --- another process's writes ---------------------------------------------------------------

WRITER = """
import sys, time
kind, target, statement = sys.argv[1:4]
if kind == "sqlite":
    import sqlite3
    conn = sqlite3.connect(target, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
else:
    import psycopg
    conn = psycopg.connect(target)
conn.execute(statement)
start = time.monotonic()
conn.commit() if kind != "sqlite" else conn.execute("COMMIT")
print(start, time.monotonic())
"""


def writer_args(engine: Engine, statement: str) -> list[str]:
    if engine.dialect.name == "sqlite":
        return [sys.executable, "-c", WRITER, "sqlite", str(engine.url.database), statement]
    url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return [sys.executable, "-c", WRITER, "postgresql", url, statement]


async def first_seen(observe: Any, expected: Any, deadline: float) -> tuple[float, float]:
    """(when the first expected observation returned, the longest observation took)."""
    longest = 0.0
    while time.monotonic() < deadline:
        started = time.monotonic()
        got = await observe()
        now = time.monotonic()
        longest = max(longest, now - started)
        if got == expected:
            return now, longest
        await asyncio.sleep(0.005)
    raise AssertionError(f"not seen within {DEADLINE_SECONDS} s: {expected!r}")


async def written_elsewhere(engine: Engine, statement: str, observe: Any, expected: Any) -> float:
    """Commits `statement` in another process (so only the stamp or NOTIFY can tell this one)
    and returns how long after the commit began `observe()` first gave `expected`."""
    proc = await asyncio.create_subprocess_exec(
        *writer_args(engine, statement), stdout=asyncio.subprocess.PIPE
    )
    seen, longest = await first_seen(observe, expected, time.monotonic() + DEADLINE_SECONDS)
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    committing, committed = (float(x) for x in out.split())
    delay = seen - committing
    # Tolerance, measured: the commit itself and one observation's round trip.
    tolerance = (committed - committing) + longest
    print(f"{engine.dialect.name}: seen {delay * 1000:.0f} ms after the commit began")
    assert delay <= routing_refresh.STALENESS_BOUND_SECONDS + tolerance, (delay, tolerance)
    return delay


async def test_a_write_by_another_process_reaches_resolve_within_the_bound(
    client: TestClient, engine: Engine
) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    [unit] = world.units_of(2)
    assert (await resolved(client, unit))["version"] == 2

    async def version() -> int:
        return int((await resolved(client, unit))["version"])

    stop = f"UPDATE ai_ab_experiment_arms SET status = 'stopped' WHERE id = {world.arms[2]}"
    await written_elsewhere(engine, stop, version, 1)


async def test_the_stamp_alone_keeps_the_bound(engine: Engine) -> None:
    """Without LISTEN (a lost notification, a dropped connection), the stamp poll does."""
    world: World = seed(engine, active=1)
    cache = routing_refresh.RoutingCache(engine)  # no wakers: no LISTEN
    try:
        await cache.current()

        async def content() -> str:
            snapshot = cache.snapshot
            assert snapshot is not None
            return str(snapshot.routing.answer("support-bot", "u")["content"])

        edit = f"UPDATE ai_prompt_versions SET content = 'edited' WHERE id = {world.versions[1]}"
        await written_elsewhere(engine, edit, content, "edited")
    finally:
        await cache.stop()


# --- failures and consistency of the reload ---------------------------------------------------


async def until_fresh(cache: routing_refresh.RoutingCache) -> routing_refresh.Snapshot:
    deadline = time.monotonic() + DEADLINE_SECONDS
    while (snapshot := cache.fresh()) is None:
        assert time.monotonic() < deadline, "the refresh loop did not catch up"
        await asyncio.sleep(0.01)
    return snapshot


async def test_while_reloads_fail_requests_answer_from_the_last_snapshot_without_waiting(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After this process's own write, with the database down: one reload is tried, and
    every request answers from the last snapshot; none starts another reload within the
    poll interval (an hour here, so the count cannot depend on how fast the test runs)."""
    version = seed(engine, active=1).versions[1]
    cache = routing_refresh.RoutingCache(engine, poll_seconds=3600)
    try:
        first = await cache.current()
        attempts: list[int] = []

        def unreachable(*args: Any) -> routing_refresh.Snapshot:
            attempts.append(1)
            raise OperationalError("SELECT", {}, Exception("connection refused"))

        monkeypatch.setattr(routing_refresh, "load", unreachable)
        execute(engine, f"UPDATE ai_prompt_versions SET content = 'new' WHERE id = {version}")
        assert cache.fresh() is None  # the process knows its snapshot is behind its write
        served = [await cache.current() for _ in range(200)]
        assert {id(snapshot) for snapshot in served} == {id(first)}
        assert len(attempts) == 1
        monkeypatch.undo()
        cache.wake.set()  # what the poll or NOTIFY does once the database is back
        snapshot = await until_fresh(cache)
        assert snapshot.routing.answer("support-bot", "u")["content"] == "new"
    finally:
        await cache.stop()


async def test_before_the_first_snapshot_a_failure_is_not_retried_by_every_request(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[int] = []

    def unreachable(*args: Any) -> routing_refresh.Snapshot:
        attempts.append(1)
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(routing_refresh, "load", unreachable)
    cache = routing_refresh.RoutingCache(engine, poll_seconds=3600)
    try:
        for _ in range(50):
            with pytest.raises(DatabaseUnavailable):
                await cache.current()
        assert len(attempts) == 1
    finally:
        await cache.stop()


async def test_any_failure_of_a_reload_leaves_the_refresh_loop_running(
    engine: Engine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Not only database errors: a bug in a reload is logged, and the loop tries again."""
    version = seed(engine, active=1).versions[1]
    cache = routing_refresh.RoutingCache(engine, poll_seconds=0.01)
    real_load = routing_refresh.load
    failures: list[int] = []

    def buggy_once(*args: Any) -> routing_refresh.Snapshot:
        if not failures:
            failures.append(1)
            raise KeyError("active_version")
        return real_load(*args)

    try:
        await cache.current()
        await cache.refresh()  # none in flight: none starts before the next await
        monkeypatch.setattr(routing_refresh, "load", buggy_once)
        execute(engine, f"UPDATE ai_prompt_versions SET content = 'new' WHERE id = {version}")
        snapshot = await until_fresh(cache)
        assert failures == [1]
        assert snapshot.routing.answer("support-bot", "u")["content"] == "new"
        assert not any(task.done() for task in cache._tasks)
        [record] = [r for r in caplog.records if "not refreshed" in r.getMessage()]
        assert record.levelname == "ERROR" and "KeyError" in record.__dict__["error"]
    finally:
        await cache.stop()


def test_reloads_have_an_engine_of_their_own(engine: Engine) -> None:
    own = routing_refresh.reader_engine(engine)
    try:
        assert own is not engine and own.url == engine.url
        with own.connect() as conn:
            assert conn.execute(text("SELECT value FROM routing_stamp")).scalar_one() >= 0
            if engine.dialect.name == "postgresql":
                limit = conn.execute(text("SHOW statement_timeout")).scalar_one()
                assert limit == f"{routing_refresh.LOAD_TIMEOUT_SECONDS:g}s"
    finally:
        own.dispose()


def test_the_snapshot_is_one_state_of_the_database(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A promotion committing between the stamp and the rows (here: while the reload reads)
    is in the snapshot whole or not at all, and the stamp says which."""
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    experiment, versions = world.experiment_id, world.versions
    real_build = client_config.build
    promoted: list[int] = []

    def build_while_promoting(session: Session) -> dict[str, Any]:
        if not promoted:
            promoted.append(1)
            execute(  # another connection, committed before the rows are read
                engine,
                f"UPDATE ai_ab_experiments SET status = 'completed' WHERE id = {experiment}",
                f"UPDATE ai_prompt_versions SET status = 'retired' WHERE id = {versions[1]}",
                f"UPDATE ai_prompt_versions SET status = 'active' WHERE id = {versions[2]}",
            )
        return real_build(session)

    before = stamp(engine)
    monkeypatch.setattr(client_config, "build", build_while_promoting)
    snapshot = routing_refresh.load(engine, None)
    assert promoted
    answer = snapshot.routing.answer("support-bot", world.units_of(2)[0])
    assert (snapshot.stamp, answer["experiment_id"], answer["version"]) == (
        before,
        world.experiment_id,
        2,
    )
    again = routing_refresh.load(engine, snapshot)
    answer = again.routing.answer("support-bot", world.units_of(2)[0])
    assert again.stamp is not None and again.stamp > before
    assert (answer["experiment_id"], answer["version"]) == (None, 2)
    assert again.etag != snapshot.etag


async def test_the_snapshot_age_is_a_gauge(client: TestClient, engine: Engine) -> None:
    resp = await client.get("/metrics")
    assert "prompt_worker_routing_snapshot_age_seconds" not in await resp.text()  # no snapshot
    seed(engine, active=1)
    await resolved(client, "u")
    resp = await client.get("/metrics")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    [sample] = families["prompt_worker_routing_snapshot_age_seconds"].samples
    assert 0 <= sample.value < DEADLINE_SECONDS
