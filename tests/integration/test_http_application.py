"""The application API over real HTTP on SQLite and PostgreSQL: resolve (sticky, paused,
stopped arms, read-only), conversation ingest (202, all-or-nothing 400s), and its token."""

from __future__ import annotations

import json
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import event, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.experiments import ExperimentArm
from optimizer.assignment import pick_arm
from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.errors import Conflict, InvalidInput, NotFound
from optimizer.resolve import resolve
from tests.integration.test_ingest import conversation_count, record, seed
from tests.support.http_client import ClientMaker

INGEST = "ingest-token-1"
ADMIN = "admin-token-1"
AUTH = {"Authorization": f"Bearer {INGEST}"}
SETTINGS = Settings(admin_token=ADMIN, ingest_token=INGEST)


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, SETTINGS)


async def post(client: TestClient, body: Any, headers: dict[str, str] = AUTH) -> ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/v1/conversations", data=data, headers=headers)


# --- resolve, called directly --------------------------------------------------------------


def test_resolve_without_experiment(engine: Engine) -> None:
    world = seed(engine, active=2)
    assert resolve(engine, "support-bot", "u1") == {
        "prompt": "support-bot",
        "version": 2,
        "version_id": world.versions[2],
        "content": "support-bot prompt v2",
        "experiment_id": None,
        "arm": None,
    }


def test_resolve_running_experiment_is_sticky_and_weighted(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 3.0)])
    arms = [(world.arms[1], 1.0), (world.arms[2], 3.0)]
    seen: Counter[int] = Counter()
    for i in range(400):
        answer = resolve(engine, "support-bot", f"unit-{i}")
        assert answer == resolve(engine, "support-bot", f"unit-{i}")  # sticky
        assert answer["experiment_id"] == world.experiment_id
        arm_id = pick_arm(world.experiment_id or 0, f"unit-{i}", arms)
        assert answer["arm"]["id"] == arm_id
        number = 1 if arm_id == world.arms[1] else 2
        assert answer["version"] == number and answer["version_id"] == world.versions[number]
        assert answer["arm"]["role"] == ("control" if number == 1 else "variant")
        seen[number] += 1
    assert 0.15 < seen[1] / 400 < 0.35


def test_resolve_paused_experiment_serves_control(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)], status="paused")
    for i in range(50):
        answer = resolve(engine, "support-bot", f"u{i}")
        assert (answer["version"], answer["experiment_id"], answer["arm"]) == (1, None, None)
        assert answer["version_id"] == world.versions[1]


def test_stopped_arm_sends_its_units_to_control_and_moves_nobody_else(engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0), (3, 1.0)])
    units = [f"u{i}" for i in range(600)]
    before = {u: resolve(engine, "support-bot", u)["version"] for u in units}
    assert set(before.values()) == {1, 2, 3}
    with Session(engine) as session, session.begin():
        session.get(ExperimentArm, world.arms[3]).status = "stopped"
    after = {u: resolve(engine, "support-bot", u) for u in units}
    for unit in units:
        expected = 1 if before[unit] == 3 else before[unit]
        assert after[unit]["version"] == expected, unit
        role = "control" if expected == 1 else "variant"
        assert after[unit]["arm"] == {"id": world.arms[expected], "role": role}


def test_resolve_completed_experiment_is_ignored(engine: Engine) -> None:
    seed(engine, experiment=[(1, 1.0), (2, 1.0)], status="completed")
    answer = resolve(engine, "support-bot", "u1")
    assert (answer["version"], answer["experiment_id"]) == (1, None)


def test_resolve_errors(engine: Engine) -> None:
    seed(engine, active=None)
    with pytest.raises(NotFound):
        resolve(engine, "nope", "u1")
    with pytest.raises(Conflict, match="no active version"):
        resolve(engine, "support-bot", "u1")
    for unit in ("", " ", "x" * 201):
        with pytest.raises(InvalidInput) as caught:
            resolve(engine, "support-bot", unit)
        assert caught.value.field == "unit_id"


def test_resolve_writes_nothing(engine: Engine) -> None:
    seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    statements: list[str] = []

    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.lstrip().split()[0].upper())

    event.listen(engine, "before_cursor_execute", note)
    try:
        for i in range(5):
            resolve(engine, "support-bot", f"u{i}")
    finally:
        event.remove(engine, "before_cursor_execute", note)
    # BEGIN: on SQLite the engine opens every transaction with BEGIN IMMEDIATE (optimizer.db).
    assert statements.count("SELECT") >= 5 and set(statements) <= {"SELECT", "BEGIN"}


# --- HTTP --------------------------------------------------------------------------------


async def test_http_resolve(client: TestClient, engine: Engine) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    resp = await client.get(
        "/v1/prompts/support-bot/resolve", params={"unit_id": "u 1/é"}, headers=AUTH
    )
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body == resolve(engine, "support-bot", "u 1/é")
    assert body["experiment_id"] == world.experiment_id


@pytest.mark.parametrize(
    ("path", "params", "status", "field"),
    [
        ("/v1/prompts/support-bot/resolve", {}, 400, "unit_id"),
        ("/v1/prompts/support-bot/resolve", {"unit_id": ""}, 400, "unit_id"),
        ("/v1/prompts/support-bot/resolve", {"unit_id": "u", "x": "1"}, 400, "x"),
        ("/v1/prompts/nope/resolve", {"unit_id": "u"}, 404, None),
    ],
)
async def test_http_resolve_errors(
    client: TestClient,
    engine: Engine,
    path: str,
    params: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    seed(engine)
    resp = await client.get(path, params=params, headers=AUTH)
    assert resp.status == status
    assert (await resp.json())["field"] == field


async def test_http_ingest_single_and_batch(client: TestClient, engine: Engine) -> None:
    seed(engine)
    resp = await post(client, record(success=True))
    assert resp.status == 202 and await resp.json() == {"accepted": 1}
    resp = await post(client, {"conversations": [record(unit_id=f"u{i}") for i in range(10)]})
    assert resp.status == 202 and await resp.json() == {"accepted": 10}
    assert conversation_count(engine) == 11


async def test_http_ingest_bad_rows_listed(client: TestClient, engine: Engine) -> None:
    seed(engine)
    batch = [record(), record(rating="5"), record(), record(prompt="nope"), record()]
    resp = await post(client, {"conversations": batch})
    assert resp.status == 400
    body = await resp.json()
    assert set(body) == {"error", "field", "errors"} and body["field"] is None
    assert [(e["index"], e["field"]) for e in body["errors"]] == [(1, "rating"), (3, "prompt")]
    assert all(e["problem"] for e in body["errors"])
    assert conversation_count(engine) == 0


async def test_http_ingest_limit_and_malformed(client: TestClient, engine: Engine) -> None:
    seed(engine)
    resp = await post(client, {"conversations": [record()] * 1001})
    assert resp.status == 400 and "1000" in (await resp.json())["error"]
    for raw in (b"", b"{", b"[1]", b'{"rating": NaN}', b"\xff"):
        resp = await post(client, raw)
        assert resp.status == 400, raw
    assert conversation_count(engine) == 0


async def test_http_ingest_body_limit(engine: Engine, make_client: ClientMaker) -> None:
    seed(engine)
    client = await make_client(engine, SETTINGS, max_body_bytes=2048)
    resp = await post(client, record(transcript="x" * 4096))
    assert resp.status == 413
    assert conversation_count(engine) == 0


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {ADMIN}"},
        {"Authorization": INGEST},
    ],
)
async def test_http_auth_refused(
    client: TestClient, engine: Engine, headers: dict[str, str]
) -> None:
    seed(engine)
    resp = await post(client, record(), headers=headers)
    assert resp.status == 401
    resp = await client.get(
        "/v1/prompts/support-bot/resolve", params={"unit_id": "u"}, headers=headers
    )
    assert resp.status == 401
    assert conversation_count(engine) == 0


async def test_http_disabled_without_ingest_token(engine: Engine, make_client: ClientMaker) -> None:
    seed(engine)
    client = await make_client(engine, SETTINGS, ingest_token=None)
    resp = await post(client, record())
    assert resp.status == 503 and "INGEST_TOKEN" in (await resp.json())["error"]
    resp = await client.get(
        "/v1/prompts/support-bot/resolve", params={"unit_id": "u"}, headers=AUTH
    )
    assert resp.status == 503


# --- ingest: the unit's slice, bounds, the future -------------------------------------------


async def test_http_rows_as_resolve_answered_are_accepted_before_and_after_a_stop(
    client: TestClient, engine: Engine
) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0), (3, 1.0)])

    async def log_as_resolved(units: list[str]) -> None:
        rows = []
        for unit in units:
            resp = await client.get(
                "/v1/prompts/support-bot/resolve", params={"unit_id": unit}, headers=AUTH
            )
            answer = await resp.json()
            rows.append(
                record(
                    unit_id=unit, version=answer["version"], experiment_id=answer["experiment_id"]
                )
            )
        resp = await post(client, {"conversations": rows})
        assert resp.status == 202, await resp.text()

    units = [f"u{i}" for i in range(90)]
    await log_as_resolved(units)
    with Session(engine) as session, session.begin():
        session.get(ExperimentArm, world.arms[3]).status = "stopped"
    await log_as_resolved(units)
    with Session(engine) as session:
        rows = session.execute(
            select(
                Conversation.unit_id, Conversation.arm_id, Conversation.assigned_arm_id
            ).order_by(Conversation.id)
        ).all()
    assert len(rows) == 2 * len(units)
    for position, (unit, served, assigned) in enumerate(rows):
        assert assigned == world.arms[world.assigned(unit)]
        after_stop = position >= len(units)
        if after_stop and assigned == world.arms[3]:
            assert served == world.arms[1]
        else:
            assert served == assigned


async def test_http_row_for_another_arm_is_a_400_naming_index_and_version(
    client: TestClient, engine: Engine
) -> None:
    world = seed(engine, experiment=[(1, 1.0), (2, 1.0)])
    [unit] = world.units_of(1, prefix="user-")
    batch = [
        record(unit_id=unit, version=1, experiment_id=world.experiment_id),
        record(unit_id=unit, version=2, experiment_id=world.experiment_id),
    ]
    resp = await post(client, {"conversations": batch})
    assert resp.status == 400
    body = await resp.json()
    assert body["errors"] == [
        {
            "index": 1,
            "field": "version",
            "problem": (
                f"unit {unit!r} is assigned to version 1 (arm {world.arms[1]}) of experiment "
                f"{world.experiment_id}, not version 2; send the version and experiment_id that "
                "resolve returned"
            ),
        }
    ]
    assert conversation_count(engine) == 0


async def test_http_bounds_and_future_dates(client: TestClient, engine: Engine) -> None:
    seed(engine)
    resp = await post(
        client,
        {
            "conversations": [
                record(),
                record(latency_ms=1e200),
                record(cost_usd=1000.01),
                record(output_tokens=10**400),
            ]
        },
    )
    assert resp.status == 400
    errors = (await resp.json())["errors"]
    assert [(e["index"], e["field"]) for e in errors] == [
        (1, "latency_ms"),
        (2, "cost_usd"),
        (3, "output_tokens"),
    ]
    assert errors[0]["problem"] == (
        "must be a finite number from 0 to 86,400,000 (one day); got 1e+200"
    )
    ahead = utcnow() + timedelta(minutes=10)
    resp = await post(client, record(occurred_at=ahead.isoformat()))
    assert resp.status == 400
    [error] = (await resp.json())["errors"]
    assert error["field"] == "occurred_at" and "after the server's time" in error["problem"]
    assert conversation_count(engine) == 0
    soon = utcnow() + timedelta(minutes=4)
    resp = await post(
        client,
        record(
            occurred_at=soon.isoformat(),
            latency_ms=86_400_000,
            cost_usd=1000,
            input_tokens=10_000_000,
        ),
    )
    assert resp.status == 202, await resp.text()
    assert conversation_count(engine) == 1
