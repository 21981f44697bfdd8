"""The admin prompt API over real HTTP against SQLite and PostgreSQL: happy paths, auth,
and bad input answering a JSON 4xx that names the field and writes nothing."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from models.experiments import Experiment
from optimizer.config import Settings
from optimizer.db import session_factory
from tests.support.http_client import ClientMaker

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
TABLES = ("prompts", "ai_prompt_versions", "prompt_activations")


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, Settings(admin_token=TOKEN))


def _counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES
        }


async def counts(engine: Engine) -> dict[str, int]:
    return await asyncio.to_thread(_counts, engine)


async def post(client: TestClient, path: str, body: Any) -> ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(path, data=data, headers=AUTH)


async def ok(resp: ClientResponse, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def error_of(resp: ClientResponse, status: int, field: str | None = None) -> str:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "field"} and body["error"]
    assert body["field"] == field, body
    return str(body["error"])


async def seed(client: TestClient) -> None:
    await ok(await post(client, "/prompts", {"name": "support", "content": "Be helpful."}), 201)
    await ok(
        await post(
            client, "/prompts/support/versions", {"content": "Be brief.", "change_notes": "shorter"}
        ),
        201,
    )


async def test_create_list_show(client: TestClient) -> None:
    resp = await post(client, "/prompts", {"name": "support", "content": "Be helpful."})
    created = await ok(resp, 201)
    assert resp.headers["Location"] == "/prompts/support"
    assert created["name"] == "support" and created["active_version"] == 1
    (v1,) = created["versions"]
    assert {
        k: v1[k] for k in ("number", "status", "content", "change_notes", "parent", "source")
    } == {
        "number": 1,
        "status": "active",
        "content": "Be helpful.",
        "change_notes": None,
        "parent": None,
        "source": "manual",
    }
    assert v1["created_at"].endswith("Z")
    assert created["activations"][0]["actor"] == "admin-api"
    assert created["activations"][0]["reason"] == "created"

    version = await ok(
        await post(
            client, "/prompts/support/versions", {"content": "Be brief.", "change_notes": "shorter"}
        ),
        201,
    )
    assert {k: version[k] for k in ("number", "status", "parent", "change_notes")} == {
        "number": 2,
        "status": "candidate",
        "parent": 1,
        "change_notes": "shorter",
    }

    listed = await ok(await client.get("/prompts", headers=AUTH), 200)
    (entry,) = listed["prompts"]
    assert {k: entry[k] for k in ("name", "active_version", "versions_count")} == {
        "name": "support",
        "active_version": 1,
        "versions_count": 2,
    }
    assert entry["created_at"].endswith("Z")

    shown = await ok(await client.get("/prompts/support", headers=AUTH), 200)
    assert shown["active_version"] == 1
    assert [(v["number"], v["status"]) for v in shown["versions"]] == [
        (1, "active"),
        (2, "candidate"),
    ]


async def test_rollback(client: TestClient, engine: Engine) -> None:
    await seed(client)
    rolled = await ok(
        await post(client, "/prompts/support/rollback", {"version": 2, "reason": "v1 too long"}),
        200,
    )
    assert rolled["active_version"] == 2
    assert [(v["number"], v["status"]) for v in rolled["versions"]] == [
        (1, "retired"),
        (2, "active"),
    ]
    last = rolled["activations"][-1]
    assert {k: last[k] for k in ("from_version", "to_version", "actor", "reason")} == {
        "from_version": 1,
        "to_version": 2,
        "actor": "admin-api",
        "reason": "v1 too long",
    }
    assert last["at"].endswith("Z")
    back = await ok(await post(client, "/prompts/support/rollback", {"version": 1}), 200)
    assert back["active_version"] == 1
    assert back["activations"][-1]["reason"]


async def test_auth_required(client: TestClient, engine: Engine) -> None:
    for method, path in (
        ("POST", "/prompts"),
        ("GET", "/prompts"),
        ("GET", "/prompts/x"),
        ("POST", "/prompts/x/versions"),
        ("POST", "/prompts/x/rollback"),
    ):
        resp = await client.request(method, path, data=b'{"name": "x", "content": "y"}')
        await error_of(resp, 401)
        resp = await client.request(
            method,
            path,
            headers={"Authorization": "Bearer nope"},
            data=b'{"name": "x", "content": "y"}',
        )
        await error_of(resp, 401)
    assert await counts(engine) == dict.fromkeys(TABLES, 0)


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/prompts", {"content": "x"}, "name"),
        ("/prompts", {"name": "x"}, "content"),
        ("/prompts", {"name": "bad name", "content": "x"}, "name"),
        ("/prompts", {"name": 7, "content": "x"}, "name"),
        ("/prompts", {"name": "x", "content": ""}, "content"),
        ("/prompts", {"name": "x", "content": "x" * 100_001}, "content"),
        ("/prompts", {"name": "x", "content": "a\u0000b"}, "content"),
        ("/prompts", {"name": "x", "content": "y", "extra": 1}, "extra"),
        ("/prompts", [1], None),
        ("/prompts", b"", None),
        ("/prompts", b"{not json", None),
        ("/prompts/support/versions", {}, "content"),
        ("/prompts/support/versions", {"content": 5}, "content"),
        (
            "/prompts/support/versions",
            {"content": "ok", "change_notes": "x" * 5001},
            "change_notes",
        ),
        ("/prompts/support/versions", {"content": "ok", "status": "active"}, "status"),
        ("/prompts/support/rollback", {}, "version"),
        ("/prompts/support/rollback", {"version": "2"}, "version"),
        ("/prompts/support/rollback", {"version": 0}, "version"),
        ("/prompts/support/rollback", {"version": True}, "version"),
        ("/prompts/support/rollback", {"version": 1.5}, "version"),
        ("/prompts/support/rollback", {"version": 2, "reason": ""}, "reason"),
        ("/prompts/support/rollback", {"version": 2, "reason": 3}, "reason"),
        ("/prompts/bad%20name/versions", {"content": "ok"}, "name"),
    ],
)
async def test_bad_input_is_400_and_writes_nothing(
    client: TestClient, engine: Engine, path: str, body: Any, field: str | None
) -> None:
    await seed(client)
    before = await counts(engine)
    await error_of(await post(client, path, body), 400, field)
    assert await counts(engine) == before


async def test_not_found_is_404(client: TestClient, engine: Engine) -> None:
    await seed(client)
    before = await counts(engine)
    assert "no prompt named 'ghost'" in await error_of(
        await client.get("/prompts/ghost", headers=AUTH), 404
    )
    await error_of(await post(client, "/prompts/ghost/versions", {"content": "x"}), 404)
    await error_of(await post(client, "/prompts/ghost/rollback", {"version": 1}), 404)
    await error_of(await post(client, "/prompts/support/rollback", {"version": 9}), 404)
    await error_of(await client.get("/prompts/bad%20name", headers=AUTH), 400, "name")
    assert await counts(engine) == before


async def test_conflicts_are_409_and_write_nothing(client: TestClient, engine: Engine) -> None:
    await seed(client)
    before = await counts(engine)
    assert "already exists" in await error_of(
        await post(client, "/prompts", {"name": "support", "content": "new"}), 409
    )
    assert "version 2" in await error_of(
        await post(client, "/prompts/support/versions", {"content": "Be brief."}), 409
    )
    assert "already active" in await error_of(
        await post(client, "/prompts/support/rollback", {"version": 1}), 409
    )

    def start_experiment() -> int:
        with session_factory(engine).begin() as session:
            prompt_id = session.execute(text("SELECT id FROM prompts")).scalar_one()
            experiment = Experiment(prompt_id=prompt_id, status="running")
            session.add(experiment)
            session.flush()
            return experiment.id

    experiment_id = await asyncio.to_thread(start_experiment)
    message = await error_of(await post(client, "/prompts/support/rollback", {"version": 2}), 409)
    assert f"experiment {experiment_id}" in message and "stop it first" in message
    assert await counts(engine) == before
    shown = await ok(await client.get("/prompts/support", headers=AUTH), 200)
    assert shown["active_version"] == 1


async def test_unknown_query_parameter_on_list(client: TestClient) -> None:
    await error_of(await client.get("/prompts?limit=5", headers=AUTH), 400, "limit")
