"""Idempotent ingest on real SQLite and PostgreSQL: a retried batch with the same
Idempotency-Key and body is answered without being stored again, a different body is a 409,
a malformed key a 400, and the key holds across restarts, replicas and concurrent requests,
and lapses after 24 h."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.idempotency import IdempotencyKey
from optimizer import idempotency
from optimizer.errors import InvalidInput
from optimizer.ingest import ingest
from tests.integration.test_ingest import conversation_count, record, seed
from tests.support.http_client import INGEST_TOKEN, ClientMaker

AUTH = {"Authorization": f"Bearer {INGEST_TOKEN}"}
NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def batch(*units: str) -> bytes:
    return json.dumps({"conversations": [record(unit_id=unit) for unit in units]}).encode()


async def post(
    client: TestClient[web.Request, web.Application], body: bytes, key: str | None
) -> ClientResponse:
    headers = dict(AUTH)
    if key is not None:
        headers[idempotency.HEADER] = key
    return await client.post("/v1/conversations", data=body, headers=headers)


def key_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(IdempotencyKey)).scalar_one())


def claim(key: str, body: bytes) -> idempotency.Claim:
    found = idempotency.claim([key], body)
    assert found is not None
    return found


# --- over HTTP ------------------------------------------------------------------------------


async def test_retry_with_same_key_and_body_is_answered_without_storing(
    engine: Engine, make_client: ClientMaker
) -> None:
    seed(engine)
    client = await make_client(engine)
    body = batch("u1", "u2")
    first = await post(client, body, "batch-1")
    assert first.status == 202
    answer = await first.json()
    assert answer == {"accepted": 2}
    again = await post(client, body, "batch-1")
    assert again.status == 202 and await again.json() == answer
    assert conversation_count(engine) == 2 and key_count(engine) == 1


async def test_without_a_key_every_post_is_stored(engine: Engine, make_client: ClientMaker) -> None:
    seed(engine)
    client = await make_client(engine)
    for _ in range(2):
        assert (await post(client, batch("u1"), None)).status == 202
    assert conversation_count(engine) == 2 and key_count(engine) == 0


async def test_same_key_with_another_body_is_a_409_naming_the_header(
    engine: Engine, make_client: ClientMaker
) -> None:
    seed(engine)
    client = await make_client(engine)
    assert (await post(client, batch("u1"), "k")).status == 202
    # The same records re-serialised differently are another body: identity is the bytes.
    for other in (batch("u2"), batch("u1").replace(b", ", b",")):
        answer = await post(client, other, "k")
        assert answer.status == 409
        error = await answer.json()
        assert error["field"] == "Idempotency-Key"
        assert "Idempotency-Key 'k'" in error["error"] and "different body" in error["error"]
        assert "new Idempotency-Key" in error["error"]
    assert conversation_count(engine) == 1


async def test_a_new_app_on_the_same_database_remembers_the_key(
    engine: Engine, make_client: ClientMaker
) -> None:
    seed(engine)
    body = batch("u1")
    first = await make_client(engine)
    assert (await post(first, body, "restart")).status == 202
    await first.close()
    second = await make_client(engine)  # a restart, or another replica
    again = await post(second, body, "restart")
    assert again.status == 202 and await again.json() == {"accepted": 1}
    assert (await post(second, batch("u9"), "restart")).status == 409
    assert conversation_count(engine) == 1


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("", "got 0 characters"),
        ("x" * 201, "got 201 characters"),
        ("caf\u00e9", "outside that range"),
        ("tab\there", "outside that range"),
    ],
)
async def test_malformed_key_is_a_400_and_stores_nothing(
    engine: Engine, make_client: ClientMaker, key: str, problem: str
) -> None:
    seed(engine)
    client = await make_client(engine)
    headers = {**AUTH, idempotency.HEADER: key}
    answer = await client.post("/v1/conversations", data=batch("u1"), headers=headers)
    assert answer.status == 400
    error = await answer.json()
    assert error["field"] == "Idempotency-Key"
    assert "1 to 200 printable ASCII characters" in error["error"] and problem in error["error"]
    assert conversation_count(engine) == 0 and key_count(engine) == 0


async def test_key_sent_twice_is_a_400(engine: Engine, make_client: ClientMaker) -> None:
    seed(engine)
    client = await make_client(engine)
    headers = [*AUTH.items(), (idempotency.HEADER, "a"), (idempotency.HEADER, "b")]
    answer = await client.post("/v1/conversations", data=batch("u1"), headers=headers)
    assert answer.status == 400
    assert (await answer.json())["field"] == "Idempotency-Key"
    assert conversation_count(engine) == 0


async def test_refused_batch_stores_no_key(engine: Engine, make_client: ClientMaker) -> None:
    seed(engine)
    client = await make_client(engine)
    bad = json.dumps({"conversations": [record(), record(version=99)]}).encode()
    assert (await post(client, bad, "k")).status == 400
    assert (await post(client, b"{not json", "k")).status == 400
    assert key_count(engine) == 0
    # The key is still free: a corrected batch under it is stored.
    good = await post(client, batch("u1"), "k")
    assert good.status == 202 and await good.json() == {"accepted": 1}
    assert conversation_count(engine) == 1


@pytest.mark.postgres
@pytest.mark.parametrize("same_body", [True, False])
async def test_concurrent_requests_with_one_key_store_once(
    pg_engine: Engine, make_client: ClientMaker, same_body: bool
) -> None:
    seed(pg_engine)
    replicas = [await make_client(pg_engine) for _ in range(4)]
    bodies = [batch("u1", "u2") if same_body else batch(f"u{i}") for i in range(8)]
    answers = await asyncio.gather(
        *(post(replicas[i % 4], body, "race") for i, body in enumerate(bodies))
    )
    statuses = [answer.status for answer in answers]
    assert statuses.count(202) == (8 if same_body else 1)
    assert statuses.count(409) == (0 if same_body else 7)
    stored = 2 if same_body else 1
    for answer in answers:
        if answer.status == 202:
            assert await answer.json() == {"accepted": stored}
    assert conversation_count(pg_engine) == stored and key_count(pg_engine) == 1


# --- with an injected clock -----------------------------------------------------------------


def test_key_lapses_after_24_hours(engine: Engine) -> None:
    seed(engine)
    body = batch("u1")
    request = claim("daily", body)
    assert ingest(engine, json.loads(body), now=NOW, key=request) == 1
    last = NOW + idempotency.KEPT - timedelta(seconds=1)
    assert ingest(engine, json.loads(body), now=last, key=request) == 1
    assert conversation_count(engine) == 1
    # After 24 h the same key is a new batch, and the old row was pruned to make room.
    assert ingest(engine, json.loads(body), now=NOW + idempotency.KEPT, key=request) == 1
    assert conversation_count(engine) == 2 and key_count(engine) == 1


def test_expired_keys_are_pruned_as_new_keys_arrive(engine: Engine) -> None:
    seed(engine)
    for i in range(3):
        body = batch(f"u{i}")
        ingest(engine, json.loads(body), now=NOW, key=claim(f"old-{i}", body))
    assert key_count(engine) == 3
    body = batch("new")
    ingest(engine, json.loads(body), now=NOW + timedelta(hours=25), key=claim("new", body))
    with engine.connect() as conn:
        assert list(conn.execute(select(IdempotencyKey.key)).scalars()) == ["new"]


# --- the key's rules --------------------------------------------------------------------------


@settings(max_examples=200)
@given(st.text(max_size=210))
def test_claim_accepts_exactly_1_to_200_printable_ascii(key: str) -> None:
    good = 1 <= len(key) <= 200 and all(" " <= char <= "~" for char in key)
    try:
        found = idempotency.claim([key], b"{}")
    except InvalidInput as exc:
        assert not good
        assert exc.field == "Idempotency-Key"
    else:
        assert good and found == idempotency.Claim(
            key, "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        )


def test_no_header_is_no_claim() -> None:
    assert idempotency.claim([], b"{}") is None
