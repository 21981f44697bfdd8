"""The admin job API over real HTTP against SQLite and PostgreSQL: happy paths, auth, and
every kind of bad input answering a JSON 4xx that names the field and writes nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import create_db_engine
from optimizer.runtime import queue
from tests.support.http_client import ClientMaker

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SETTINGS = Settings(admin_token=TOKEN, max_attempts=4)
A_JOB = {"type": "full_cycle", "prompt": "support-bot"}


@pytest.fixture
async def client(engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(engine, SETTINGS)


def job_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM optimization_jobs")).scalar_one())


async def rows(engine: Engine) -> int:
    return await asyncio.to_thread(job_rows, engine)


async def error_of(resp: ClientResponse, status: int) -> dict[str, Any]:
    """Assert an error answer: the status, JSON content and exactly the two keys."""
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert set(body) == {"error", "field"}
    assert isinstance(body["error"], str) and body["error"]
    return body


async def post_job(client: TestClient, body: Any) -> ClientResponse:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post("/jobs", data=data, headers=AUTH)


# --- happy paths -------------------------------------------------------------------------


async def test_create_job_returns_201_with_the_stored_job(client, engine):
    before = utcnow().replace(microsecond=0)
    resp = await post_job(
        client,
        {
            "type": "pattern_analysis",
            "prompt": " support-bot ",
            "payload": {"scope": "nightly"},
            "priority": 7,
            "run_at": "2030-01-02T03:04:05Z",
        },
    )
    assert resp.status == 201
    job = await resp.json()
    assert resp.headers["Location"] == f"/jobs/{job['id']}"
    assert job["type"] == "pattern_analysis"
    assert job["status"] == "pending"
    assert job["priority"] == 7
    assert job["payload"] == {"scope": "nightly", "prompt": "support-bot"}
    assert job["run_after"] == "2030-01-02T03:04:05Z"
    assert job["max_attempts"] == 4  # from settings, not the column default
    assert job["attempts"] == 0 and job["dedupe_key"] is None
    created = datetime.fromisoformat(job["created_at"].replace("Z", "+00:00"))
    assert created >= before
    stored = await asyncio.to_thread(queue.get_job, engine, job["id"])
    assert stored.to_dict() == job


async def test_create_job_with_only_a_type_uses_defaults(client, engine):
    resp = await post_job(client, {"type": "experiment_monitoring"})
    assert resp.status == 201
    job = await resp.json()
    assert (job["priority"], job["payload"], job["status"]) == (0, {}, "pending")
    assert await rows(engine) == 1


async def test_payload_may_be_a_json_string_of_an_object(client):
    resp = await post_job(
        client, {"type": "full_cycle", "payload": '{"n": 2, "prompt": "bot"}', "priority": "-3"}
    )
    assert resp.status == 201
    job = await resp.json()
    assert job["payload"] == {"n": 2, "prompt": "bot"} and job["priority"] == -3


async def test_list_filters_by_status_and_type_newest_first(client, engine):
    ids = []
    for job_type in ("full_cycle", "pattern_analysis", "full_cycle"):
        resp = await post_job(client, {"type": job_type, "prompt": "support-bot"})
        ids.append((await resp.json())["id"])
    await client.post(f"/jobs/{ids[0]}/cancel", headers=AUTH)

    async def listed(query: str) -> list[int]:
        resp = await client.get(f"/jobs{query}", headers=AUTH)
        assert resp.status == 200
        return [j["id"] for j in (await resp.json())["jobs"]]

    assert await listed("") == ids[::-1]
    assert await listed("?type=full_cycle") == [ids[2], ids[0]]
    assert await listed("?status=cancelled") == [ids[0]]
    assert await listed("?status=pending&type=full_cycle") == [ids[2]]
    assert await listed("?status=failed") == []
    assert await listed("?limit=2") == [ids[2], ids[1]]
    assert await listed("?limit=500") == ids[::-1]


async def test_get_job_by_id(client):
    created = await (
        await post_job(client, {"type": "variant_generation", "prompt": "support-bot"})
    ).json()
    resp = await client.get(f"/jobs/{created['id']}", headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == created


async def test_cancel_pending_then_again_is_409(client, engine):
    job_id = (await (await post_job(client, A_JOB)).json())["id"]
    resp = await client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
    assert resp.status == 200
    job = await resp.json()
    assert job["id"] == job_id and job["status"] == "cancelled"
    assert job["finished_at"] is not None
    again = await error_of(await client.post(f"/jobs/{job_id}/cancel", headers=AUTH), 409)
    assert "already cancelled" in again["error"]
    stored = await asyncio.to_thread(queue.get_job, engine, job_id)
    assert stored.status == "cancelled"


async def test_cancel_running_job_asks_it_to_stop(client, engine):
    job_id = (await (await post_job(client, A_JOB)).json())["id"]
    claimed = await asyncio.to_thread(queue.claim, engine, "w1", lease_seconds=60, now=utcnow())
    assert claimed is not None and claimed.id == job_id
    resp = await client.post(f"/jobs/{job_id}/cancel", headers=AUTH)
    assert resp.status == 200
    job = await resp.json()
    assert job["status"] == "running" and job["cancel_requested"] is True


# --- not found, bad ids, routes and methods -----------------------------------------------


async def test_missing_job_is_404(client):
    body = await error_of(await client.get("/jobs/424242", headers=AUTH), 404)
    assert "424242" in body["error"] and body["field"] is None
    await error_of(await client.post("/jobs/424242/cancel", headers=AUTH), 404)


@pytest.mark.parametrize("bad_id", ["abc", "0", "-1", "1.5", "99999999999999999999", "١"])
async def test_bad_job_id_is_400(client, engine, bad_id):
    before = await rows(engine)
    for resp in (
        await client.get(f"/jobs/{bad_id}", headers=AUTH),
        await client.post(f"/jobs/{bad_id}/cancel", headers=AUTH),
    ):
        body = await error_of(resp, 400)
        assert body["field"] == "id"
    assert await rows(engine) == before


async def test_unknown_route_and_wrong_method_answer_json(client):
    body = await error_of(await client.get("/nope", headers=AUTH), 404)
    assert "/nope" in body["error"]
    resp = await client.delete("/jobs", headers=AUTH)
    body = await error_of(resp, 405)
    assert "DELETE" in body["error"]
    assert "POST" in resp.headers["Allow"]
    await error_of(await client.put("/jobs/1/cancel", headers=AUTH), 405)


# --- authentication ---------------------------------------------------------------------

ROUTES = [("POST", "/jobs"), ("GET", "/jobs"), ("GET", "/jobs/1"), ("POST", "/jobs/1/cancel")]
BAD_AUTH = [
    None,
    f"Bearer {'x' * len(TOKEN)}",  # same length, wrong
    f"Bearer {TOKEN}-and-more",  # different length
    "Bearer s",  # much shorter
    f"Basic {TOKEN}",  # wrong scheme
    "Bearer ",  # no token
    TOKEN,  # no scheme
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
@pytest.mark.parametrize("authorization", BAD_AUTH)
async def test_missing_or_wrong_token_is_401(client, engine, method, path, authorization):
    before = await rows(engine)
    headers = {} if authorization is None else {"Authorization": authorization}
    resp = await client.request(method, path, headers=headers, data=json.dumps(A_JOB))
    body = await error_of(resp, 401)
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in body["error"] and TOKEN not in json.dumps(dict(resp.headers))
    assert await rows(engine) == before


async def test_bearer_scheme_is_case_insensitive(client):
    resp = await client.get("/jobs", headers={"Authorization": f"bearer {TOKEN}"})
    assert resp.status == 200


@pytest.mark.parametrize(("method", "path"), ROUTES)
async def test_admin_api_disabled_without_admin_token(engine, make_client, method, path):
    client = await make_client(engine, SETTINGS, admin_token=None)
    resp = await client.request(method, path, headers=AUTH, data=json.dumps(A_JOB))
    body = await error_of(resp, 503)
    assert body["error"] == "admin API disabled: set ADMIN_TOKEN"
    assert await rows(engine) == 0


async def test_token_never_reaches_the_logs(client, caplog):
    caplog.set_level("DEBUG")
    await post_job(client, A_JOB)
    await client.get("/jobs", headers={"Authorization": "Bearer wrong-token-value"})
    assert TOKEN not in caplog.text and "wrong-token-value" not in caplog.text


# --- bad bodies -------------------------------------------------------------------------

BAD_BODIES: list[tuple[str, bytes | dict[str, Any], str | None]] = [
    ("malformed json", b'{"type": "full_cycle",', None),
    ("json array", b'[{"type": "full_cycle", "prompt": "support-bot"}]', None),
    ("json string", b'"full_cycle"', None),
    ("json null", b"null", None),
    ("empty body", b"", None),
    ("not utf-8", b'{"type": "full_\xff"}', None),
    ("NaN", b'{"type": "full_cycle", "payload": {"x": NaN}}', None),
    (
        "huge integer",
        b'{"type": "full_cycle", "prompt": "bot", "priority": ' + b"9" * 5000 + b"}",
        None,
    ),
    (
        "deep nesting",
        b'{"type": "full_cycle", "payload": {"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        None,
    ),
    (
        "nesting over limit",
        b'{"type": "full_cycle", "payload": {"a": ' + b"[" * 80 + b"]" * 80 + b"}}",
        None,
    ),
    ("unknown field", {"type": "full_cycle", "priorty": 5}, "priorty"),
    ("missing type", {"priority": 1}, "type"),
    ("unknown type", {"type": "make_it_better"}, "type"),
    ("type not a string", {"type": ["full_cycle"]}, "type"),
    ("priority word", {"type": "full_cycle", "prompt": "bot", "priority": "high"}, "priority"),
    ("priority bool", {"type": "full_cycle", "prompt": "bot", "priority": True}, "priority"),
    ("priority too big", {"type": "full_cycle", "prompt": "bot", "priority": 99999}, "priority"),
    ("priority fraction", {"type": "full_cycle", "prompt": "bot", "priority": 1.5}, "priority"),
    (
        "priority digits",
        {"type": "full_cycle", "prompt": "bot", "priority": "9" * 5000},
        "priority",
    ),
    ("priority superscript", {"type": "full_cycle", "prompt": "bot", "priority": "²"}, "priority"),
    ("run_at word", {"type": "full_cycle", "prompt": "bot", "run_at": "tomorrow"}, "run_at"),
    ("run_at number", {"type": "full_cycle", "prompt": "bot", "run_at": 1700000000}, "run_at"),
    (
        "run_at edge of calendar",
        {"type": "full_cycle", "prompt": "bot", "run_at": "0001-01-01T00:00:00+01:00"},
        "run_at",
    ),
    ("payload array string", {"type": "full_cycle", "payload": "[1]"}, "payload"),
    ("payload not json", {"type": "full_cycle", "payload": "not json"}, "payload"),
    ("payload array", {"type": "full_cycle", "payload": [1]}, "payload"),
    ("payload number", {"type": "full_cycle", "payload": 5}, "payload"),
    ("payload string with NaN", {"type": "full_cycle", "payload": '{"x": NaN}'}, "payload"),
    ("payload string too deep", {"type": "full_cycle", "payload": "[" * 100_000}, "payload"),
    (
        "payload string nested over limit",
        {"type": "full_cycle", "payload": '{"a":' + "[" * 80 + "]" * 80 + "}"},
        "payload",
    ),
    ("payload string huge integer", {"type": "full_cycle", "payload": "1" * 5000}, "payload"),
    ("prompt empty", {"type": "pattern_analysis", "prompt": "  "}, "prompt"),
    ("prompt not a string", {"type": "pattern_analysis", "prompt": 5}, "prompt"),
    ("prompt not a name", {"type": "pattern_analysis", "prompt": "two words"}, "prompt"),
    # The payload is checked against its job type's model before anything is stored.
    (
        "payload field out of range",
        {"type": "variant_generation", "prompt": "support-bot", "payload": {"n": 99}},
        "payload.n",
    ),
    (
        "payload field missing",
        {"type": "variant_generation", "payload": {"n": 2}},
        "payload.prompt",
    ),
    (
        "payload field unknown",
        {"type": "full_cycle", "prompt": "bot", "payload": {"colour": 1}},
        "payload.colour",
    ),
    (
        "payload field of the wrong kind",
        {"type": "experiment_creation", "prompt": "bot", "payload": {"confidence": "high"}},
        "payload.confidence",
    ),
    (
        "payload nested field",
        {
            "type": "experiment_creation",
            "prompt": "bot",
            "payload": {"guardrails": [{"metric": "mood"}]},
        },
        "payload.guardrails[0].metric",
    ),
    (
        "prompt for a type that takes none",
        {"type": "experiment_monitoring", "prompt": "bot"},
        "payload.prompt",
    ),
]


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in BAD_BODIES], ids=[name for name, _, _ in BAD_BODIES]
)
async def test_bad_body_is_400_naming_the_field_and_writes_nothing(client, engine, body, field):
    before = await rows(engine)
    error = await error_of(await post_job(client, body), 400)
    assert error["field"] == field
    if field is not None:
        parent, _, key = field.rpartition(".")  # an unknown key: "unknown field 'k' in payload"
        assert field in error["error"] or f"'{key}' in {parent};" in error["error"]
    assert await rows(engine) == before


async def test_a_payload_is_refused_at_once_not_when_the_job_runs(client, engine):
    # Before job specs this answered 201 and the job failed seconds later.
    error = await error_of(
        await post_job(
            client, {"type": "variant_generation", "prompt": "support-bot", "payload": {"n": 99}}
        ),
        400,
    )
    assert error == {"error": "payload.n must be from 1 to 10; got 99", "field": "payload.n"}
    missing = await error_of(
        await post_job(client, {"type": "variant_generation", "payload": {"n": 2}}), 400
    )
    assert missing["error"].startswith("payload.prompt is required")
    assert await rows(engine) == 0


async def test_error_messages_say_what_is_wrong(client):
    malformed = await error_of(await post_job(client, b'{"type": '), 400)
    assert "not valid JSON" in malformed["error"]
    array = await error_of(await post_job(client, b"[1]"), 400)
    assert "must be a JSON object" in array["error"] and "array" in array["error"]
    unknown = await error_of(await post_job(client, {"type": "nope"}), 400)
    assert "full_cycle" in unknown["error"]  # lists the valid choices


BAD_QUERIES = [
    ("status=done", "status"),
    ("status=", "status"),
    ("type=nope", "type"),
    ("limit=0", "limit"),
    ("limit=501", "limit"),
    ("limit=-1", "limit"),
    ("limit=ten", "limit"),
    ("limit=1.5", "limit"),
    ("limit=" + "9" * 5000, "limit"),
    ("limit=²", "limit"),
    ("stauts=pending", "stauts"),
]


@pytest.mark.parametrize(("query", "field"), BAD_QUERIES, ids=[q for q, _ in BAD_QUERIES])
async def test_bad_list_query_is_400(client, engine, query, field):
    body = await error_of(await client.get(f"/jobs?{query}", headers=AUTH), 400)
    assert body["field"] == field
    assert await rows(engine) == 0


# --- body size --------------------------------------------------------------------------


async def test_body_over_the_limit_is_413_json(engine, make_client):
    client = await make_client(engine, SETTINGS, max_body_bytes=1024)
    big = json.dumps({"type": "full_cycle", "payload": {"blob": "x" * 5000}}).encode()
    body = await error_of(await post_job(client, big), 413)
    assert "1024" in body["error"]
    assert await rows(engine) == 0
    small = await post_job(
        client, {"type": "full_cycle", "prompt": "bot", "payload": {"scope": "x" * 500}}
    )
    assert small.status == 201


async def test_chunked_body_over_the_limit_is_413_json(engine, make_client):
    client = await make_client(engine, SETTINGS, max_body_bytes=1024)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"type": "full_cycle", "payload": {"blob": "'
        for _ in range(10):
            yield b"x" * 500
        yield b'"}}'

    resp = await client.post("/jobs", data=chunks(), headers=AUTH)
    await error_of(resp, 413)
    assert await rows(engine) == 0


# --- unexpected errors ------------------------------------------------------------------


async def test_unexpected_error_is_a_logged_generic_500(client, monkeypatch, caplog):
    def broken(*_args: Any, **_kwargs: Any) -> list[Any]:
        raise RuntimeError("internal detail that must not leak")

    monkeypatch.setattr(queue, "list_jobs", broken)
    body = await error_of(await client.get("/jobs?limit=3", headers=AUTH), 500)
    assert "internal detail" not in body["error"] and body["field"] is None
    logged = [r for r in caplog.records if r.name == "prompt_worker.http"]
    assert len(logged) == 1 and logged[0].exc_info is not None
    assert "internal detail" in caplog.text
    assert TOKEN not in caplog.text


# --- database outage --------------------------------------------------------------------


@pytest.fixture
def unreachable_engine() -> Iterator[Engine]:
    engine = create_db_engine("postgresql+psycopg://nobody@127.0.0.1:1/x")
    yield engine
    engine.dispose()


async def test_database_unreachable_is_503_json(unreachable_engine, make_client):
    client = await make_client(unreachable_engine, SETTINGS)
    for resp in (
        await client.get("/jobs", headers=AUTH),
        await client.get("/jobs/1", headers=AUTH),
        await post_job(client, A_JOB),
    ):
        body = await error_of(resp, 503)
        assert body["error"] == "database unavailable, try again"
        assert resp.headers["Retry-After"].isdigit()
