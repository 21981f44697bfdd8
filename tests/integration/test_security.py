"""Security over real HTTP: token scopes, secrets kept out of logs and answers, signed admin
requests (ADMIN_HMAC_SECRET), the application API's per-token rate limit, body and batch
limits. Pure signing and bucket logic is tested here too, with an injected clock."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from sqlalchemy import insert, inspect, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models import Conversation
from optimizer.config import Settings
from optimizer.db import create_db_engine, migrate
from optimizer.http import admin_jobs, auth
from optimizer.http.keys import ENGINE
from optimizer.http.rate_limit import APP_RATE_LIMIT, TokenBuckets, token_key
from optimizer.http.signing import (
    FreshSignature,
    SignatureRejected,
    SignatureVerifier,
    compute_signature,
    remember_signature,
    sign,
)
from optimizer.logs import JsonFormatter, KeyValueFormatter
from tests.integration.test_ingest import record, seed
from tests.support.http_client import ClientMaker, build_app

ADMIN = "adm-7f3c9e1b2d4a-token"
INGEST = "ing-5b8d2f6a0c1e-token"
SECRET = "hmac-0e9d8c7b6a5f-secret"
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN}"}
INGEST_AUTH = {"Authorization": f"Bearer {INGEST}"}
SETTINGS = Settings(admin_token=ADMIN, ingest_token=INGEST)
PUBLIC = ("/health", "/ready", "/metrics", "/openapi.json", "/docs")
PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _counts(engine: Engine) -> dict[str, int]:
    tables = [t for t in inspect(engine).get_table_names() if t != "alembic_version"]
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar_one()) for t in tables
        }


async def table_counts(engine: Engine) -> dict[str, int]:
    """Rows in every table: the evidence that a refused request wrote nothing."""
    return await asyncio.to_thread(_counts, engine)


async def error_of(resp: ClientResponse, status: int, field: str | None = None) -> str:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["error"] and body["field"] == field, body
    return str(body["error"])


def routes(app: web.Application) -> list[tuple[str, str]]:
    """(method, path with placeholders filled) for every route the app serves."""
    found = []
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        # The /ui dashboard takes no bearer token: tests/integration/test_ui_auth.py.
        if route.method == "HEAD" or path is None or path == "/ui" or path.startswith("/ui/"):
            continue
        filled = PLACEHOLDER.sub(lambda m: "1" if m.group(1) == "id" else "support-bot", path)
        found.append((route.method, filled))
    return sorted(set(found))


# --- token scopes ------------------------------------------------------------------------


async def test_ingest_token_opens_no_admin_route(
    sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    seed(sqlite_engine, experiment=[(1, 1.0), (2, 1.0)])
    client = await make_client(sqlite_engine, SETTINGS)
    admin_routes = [
        (m, p) for m, p in routes(client.app) if not p.startswith("/v1/") and p not in PUBLIC
    ]
    # The 13 admin routes of the design plus GET /insights; a vacuous list proves nothing.
    assert len(admin_routes) >= 14, admin_routes
    valid_bodies = {
        "/jobs": {"type": "pattern_analysis"},
        "/prompts": {"name": "other", "content": "x"},
    }
    before = await table_counts(sqlite_engine)
    for method, path in admin_routes:
        body = json.dumps(valid_bodies.get(path, {})).encode()
        for headers in (INGEST_AUTH, {"Authorization": f"Bearer {INGEST} "}, {}):
            resp = await client.request(method, path, data=body, headers=headers)
            message = await error_of(resp, 401)
            assert "ADMIN_TOKEN" in message, (method, path)
    assert await table_counts(sqlite_engine) == before


async def test_admin_token_opens_no_application_route(
    sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    seed(sqlite_engine)
    client = await make_client(sqlite_engine, SETTINGS)
    app_routes = [(m, p) for m, p in routes(client.app) if p.startswith("/v1/")]
    assert len(app_routes) == 3  # resolve, config, conversations
    before = await table_counts(sqlite_engine)
    for method, path in app_routes:
        resp = await client.request(
            method, path + "?unit_id=u1", data=json.dumps(record()).encode(), headers=ADMIN_AUTH
        )
        assert "INGEST_TOKEN" in await error_of(resp, 401)
    assert await table_counts(sqlite_engine) == before
    resp = await client.get("/v1/prompts/support-bot/resolve?unit_id=u1", headers=INGEST_AUTH)
    assert resp.status == 200


async def test_tokens_compared_in_constant_time(
    sqlite_engine: Engine, make_client: ClientMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    client = await make_client(sqlite_engine, SETTINGS)
    assert (await client.get("/jobs", headers=ADMIN_AUTH)).status == 200
    assert (await client.get("/jobs", headers={"Authorization": "Bearer nope"})).status == 401
    assert compared == [(ADMIN.encode(), ADMIN.encode()), (b"nope", ADMIN.encode())]


async def test_secrets_never_in_logs_or_answers(
    sqlite_engine: Engine, make_client: ClientMaker, caplog: pytest.LogCaptureFixture
) -> None:
    seed(sqlite_engine)
    wrong = "wrong-9a8b7c6d5e4f-token"
    client = await make_client(sqlite_engine, SETTINGS, admin_hmac_secret=SECRET)
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    signed = sign(SECRET, "POST", "/jobs", b'{"type": "pattern_analysis"}')
    attempts = [
        ("GET", "/jobs", {**ADMIN_AUTH, **sign(SECRET, "GET", "/jobs")}, b""),
        ("GET", "/jobs", ADMIN_AUTH, b""),  # unsigned
        ("POST", "/jobs", {**ADMIN_AUTH, **signed}, b'{"type": "pattern_analysis"}'),
        ("POST", "/jobs", {**ADMIN_AUTH, **signed}, b'{"type": "pattern_analysis"}'),  # replay
        ("GET", "/jobs", {**ADMIN_AUTH, **sign("not-the-secret", "GET", "/jobs")}, b""),
        ("GET", "/jobs", {"Authorization": f"Bearer {wrong}"}, b""),
        ("GET", "/jobs", INGEST_AUTH, b""),
        ("POST", "/v1/conversations", ADMIN_AUTH, json.dumps(record()).encode()),
        ("POST", "/v1/conversations", {"Authorization": f"Bearer {wrong}"}, b"{"),
        ("POST", "/v1/conversations", INGEST_AUTH, json.dumps(record()).encode()),
        ("POST", "/v1/conversations", INGEST_AUTH, b'{"prompt": 1}'),
        ("GET", "/v1/prompts/support-bot/resolve?unit_id=u", INGEST_AUTH, b""),
    ]
    for method, path, headers, body in attempts:
        resp = await client.request(method, path, data=body, headers=headers)
        answers.append(f"{resp.status} {dict(resp.headers)} {await resp.text()}")
    assert [a.split()[0] for a in answers] == [
        "200",
        "401",
        "201",
        "401",
        "401",
        "401",
        "401",
        "401",
        "401",
        "202",
        "400",
        "200",
    ]
    logged = [KeyValueFormatter().format(r) + repr(vars(r)) for r in caplog.records]
    assert logged, "expected the requests to log something"
    for secret in (ADMIN, INGEST, wrong, SECRET):
        assert not [line for line in logged if secret in line], secret
        assert not [answer for answer in answers if secret in answer], secret


# --- signed admin requests -----------------------------------------------------------------


@pytest.fixture
async def signed_client(sqlite_engine: Engine, make_client: ClientMaker) -> TestClient:
    return await make_client(
        sqlite_engine, SETTINGS, admin_hmac_secret=SECRET, admin_signature_window_seconds=300
    )


async def send(
    client: TestClient,
    method: str,
    path_qs: str,
    body: bytes = b"",
    *,
    sign_as: tuple[str, str, bytes] | None = None,
    timestamp: int | None = None,
    secret: str = SECRET,
) -> ClientResponse:
    """Send a request signed over `sign_as` (method, path_qs, body), by default itself."""
    what = sign_as or (method, path_qs, body)
    headers = {**ADMIN_AUTH, **sign(secret, *what, timestamp=timestamp)}
    return await client.request(method, path_qs, data=body, headers=headers)


async def test_signed_requests_accepted(signed_client: TestClient, sqlite_engine: Engine) -> None:
    assert (await send(signed_client, "GET", "/jobs")).status == 200
    assert (await send(signed_client, "GET", "/jobs?status=pending&limit=5")).status == 200
    resp = await send(signed_client, "POST", "/jobs", b'{"type": "pattern_analysis"}')
    assert resp.status == 201, await resp.text()
    assert (await table_counts(sqlite_engine))["optimization_jobs"] == 1
    # The application API is not part of signing.
    seed(sqlite_engine)
    resp = await signed_client.get("/v1/prompts/support-bot/resolve?unit_id=u", headers=INGEST_AUTH)
    assert resp.status == 200


async def test_signing_off_without_secret(sqlite_engine: Engine, make_client: ClientMaker) -> None:
    client = await make_client(sqlite_engine, SETTINGS)
    assert (await client.get("/jobs", headers=ADMIN_AUTH)).status == 200


@pytest.mark.parametrize(
    ("drop", "replace", "field", "words"),
    [
        ("X-Timestamp", {}, "X-Timestamp", "missing X-Timestamp"),
        ("X-Signature", {}, "X-Signature", "missing X-Signature"),
        (None, {"X-Timestamp": "soon"}, "X-Timestamp", "unix time"),
        (None, {"X-Timestamp": "1.7e9"}, "X-Timestamp", "unix time"),
        (None, {"X-Timestamp": "9" * 40}, "X-Timestamp", "unix time"),
        (None, {"X-Signature": "md5=abc"}, "X-Signature", "64 hex digits"),
        (None, {"X-Signature": "sha256=" + "z" * 64}, "X-Signature", "64 hex digits"),
        (None, {"X-Signature": "sha256=" + "a" * 63}, "X-Signature", "64 hex digits"),
        (None, {"X-Signature": "a" * 64}, "X-Signature", "64 hex digits"),
    ],
)
async def test_signature_headers_missing_or_malformed(
    signed_client: TestClient,
    sqlite_engine: Engine,
    drop: str | None,
    replace: dict[str, str],
    field: str,
    words: str,
) -> None:
    body = b'{"type": "pattern_analysis"}'
    headers = {**ADMIN_AUTH, **sign(SECRET, "POST", "/jobs", body), **replace}
    if drop:
        del headers[drop]
    resp = await signed_client.post("/jobs", data=body, headers=headers)
    assert words in await error_of(resp, 401, field)
    assert (await table_counts(sqlite_engine))["optimization_jobs"] == 0


@pytest.mark.parametrize("offset", [-301, 301, -3600, 10**6])
async def test_stale_or_future_timestamp(signed_client: TestClient, offset: int) -> None:
    resp = await send(signed_client, "GET", "/jobs", timestamp=int(time.time()) + offset)
    message = await error_of(resp, 401, "X-Timestamp")
    assert "ADMIN_SIGNATURE_WINDOW_SECONDS" in message
    assert ("old" if offset < 0 else "future") in message


@pytest.mark.parametrize(
    ("method", "path_qs", "body", "sign_as", "secret"),
    [
        ("GET", "/jobs", b"", ("GET", "/jobs", b""), "another-secret"),
        (
            "POST",
            "/jobs",
            b'{"type": "full_cycle", "prompt": "x"}',
            ("POST", "/jobs", b'{"type": "pattern_analysis"}'),
            SECRET,
        ),  # body tampered
        ("GET", "/jobs?limit=6", b"", ("GET", "/jobs?limit=5", b""), SECRET),  # query tampered
        ("GET", "/jobs?limit=5&status=failed", b"", ("GET", "/jobs?limit=5", b""), SECRET),
        ("GET", "/jobs/2", b"", ("GET", "/jobs/1", b""), SECRET),  # path tampered
        ("POST", "/jobs/1/cancel", b"", ("GET", "/jobs/1/cancel", b""), SECRET),  # method
    ],
)
async def test_wrong_signature_refused(
    signed_client: TestClient,
    sqlite_engine: Engine,
    method: str,
    path_qs: str,
    body: bytes,
    sign_as: tuple[str, str, bytes],
    secret: str,
) -> None:
    now = int(time.time())
    resp = await send(
        signed_client, method, path_qs, body, sign_as=sign_as, secret=secret, timestamp=now
    )
    message = await error_of(resp, 401, "X-Signature")
    assert "does not match" in message
    # The answer must not hand out the signature that would have worked.
    for stamp in (now - 1, now, now + 1):
        assert compute_signature(SECRET, method, path_qs, body, stamp) not in message
    assert SECRET not in message
    assert (await table_counts(sqlite_engine))["optimization_jobs"] == 0


async def test_replay_refused(signed_client: TestClient, sqlite_engine: Engine) -> None:
    body = b'{"type": "pattern_analysis"}'
    headers = {**ADMIN_AUTH, **sign(SECRET, "POST", "/jobs", body)}
    assert (await signed_client.post("/jobs", data=body, headers=headers)).status == 201
    resp = await signed_client.post("/jobs", data=body, headers=headers)
    assert "already used" in await error_of(resp, 401, "X-Signature")
    assert (await table_counts(sqlite_engine))["optimization_jobs"] == 1


async def test_bearer_token_still_required_when_signed(signed_client: TestClient) -> None:
    for auth_header in (INGEST_AUTH, {}):
        headers = {**auth_header, **sign(SECRET, "GET", "/jobs")}
        resp = await signed_client.get("/jobs", headers=headers)
        assert "ADMIN_TOKEN" in await error_of(resp, 401)


def test_verifier_window() -> None:
    now = [1_000_000.0]
    verifier = SignatureVerifier(SECRET, 300, clock=lambda: now[0])

    def check(stamp: int, path: str = "/jobs") -> FreshSignature:
        headers = sign(SECRET, "GET", path, b"", timestamp=stamp)
        return verifier.verify("GET", path, b"", headers["X-Timestamp"], headers["X-Signature"])

    # Exactly at the window's edges is still fresh.
    for stamp in (1_000_000 - 300, 1_000_000 + 300):
        fresh = check(stamp)
        assert fresh.digest == sign(SECRET, "GET", "/jobs", timestamp=stamp)[
            "X-Signature"
        ].removeprefix("sha256=")
        # Kept one window past the last moment it is accepted (replicas' clocks differ).
        assert fresh.expires_at == datetime.fromtimestamp(stamp + 600, UTC)
    now[0] += 1
    with pytest.raises(SignatureRejected, match="outside the allowed window"):
        check(1_000_000 - 300)


@pytest.fixture
async def replicas(
    db_url: str, make_client: ClientMaker
) -> AsyncIterator[Callable[[], Awaitable[TestClient]]]:
    """Make service instances on one migrated database (SQLite file or PostgreSQL), each with
    its own engine and connection pool, as separate processes would have."""
    migrated = create_db_engine(db_url)
    migrate(migrated)
    migrated.dispose()
    clients: list[TestClient] = []

    async def make() -> TestClient:
        client = await make_client(create_db_engine(db_url), SETTINGS, admin_hmac_secret=SECRET)
        clients.append(client)
        return client

    yield make
    for client in clients:  # each closed before its engine is disposed
        await client.close()
        client.app[ENGINE].dispose()


async def test_replay_refused_after_restart(replicas: Callable[[], Awaitable[TestClient]]) -> None:
    body = b'{"type": "pattern_analysis"}'
    headers = {**ADMIN_AUTH, **sign(SECRET, "POST", "/jobs", body)}
    first = await replicas()
    assert (await first.post("/jobs", data=body, headers=headers)).status == 201
    await first.close()
    restarted = await replicas()
    resp = await restarted.post("/jobs", data=body, headers=headers)
    assert "already used" in await error_of(resp, 401, "X-Signature")
    assert (await table_counts(restarted.app[ENGINE]))["optimization_jobs"] == 1


async def test_replay_refused_across_replicas(
    replicas: Callable[[], Awaitable[TestClient]],
) -> None:
    one, two = await replicas(), await replicas()
    bodies = [json.dumps({"type": "pattern_analysis", "priority": i}).encode() for i in range(8)]
    for body in bodies:
        headers = {**ADMIN_AUTH, **sign(SECRET, "POST", "/jobs", body)}
        # The same signed request reaches both replicas at once: exactly one runs it.
        answers = await asyncio.gather(
            one.post("/jobs", data=body, headers=headers),
            two.post("/jobs", data=body, headers=headers),
        )
        assert sorted(resp.status for resp in answers) == [201, 401]
        for resp in answers:
            if resp.status == 401:
                assert "already used" in await error_of(resp, 401, "X-Signature")
        # And later, to either of them.
        for client in (one, two):
            resp = await client.post("/jobs", data=body, headers=headers)
            assert "already used" in await error_of(resp, 401, "X-Signature")
    assert (await table_counts(one.app[ENGINE]))["optimization_jobs"] == len(bodies)


def test_used_signatures_are_pruned(engine: Engine) -> None:
    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    for i in range(3):  # forgotten after t0 + 0, 1 and 2 minutes
        assert remember_signature(
            engine, FreshSignature(f"{i:064x}", t0 + timedelta(minutes=i)), now=t0
        )
    assert not remember_signature(engine, FreshSignature(f"{0:064x}", t0), now=t0)
    # A minute and a half later the next signature prunes the two rows past their time.
    later = t0 + timedelta(minutes=1, seconds=30)
    assert remember_signature(
        engine, FreshSignature("f" * 64, later + timedelta(minutes=9)), now=later
    )
    with engine.connect() as conn:
        left = conn.execute(text("SELECT digest FROM used_signatures ORDER BY digest"))
        assert left.scalars().all() == [f"{2:064x}", "f" * 64]


async def test_signed_request_fails_closed_without_database(
    make_client: ClientMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    down = create_db_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}")

    def never(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("the handler ran though the signature could not be checked")

    monkeypatch.setattr(admin_jobs.queue, "enqueue", never)
    try:
        client = await make_client(down, SETTINGS, admin_hmac_secret=SECRET)
        resp = await send(client, "POST", "/jobs", b'{"type": "pattern_analysis"}')
        assert resp.status == 503, await resp.text()
        assert "database unavailable" in (await resp.json())["error"]
        assert resp.headers["Retry-After"]
    finally:
        down.dispose()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not installed")
def test_readme_openssl_recipe_matches_sign() -> None:
    body, stamp = b'{"type": "pattern_analysis"}', 1_760_000_000
    message = f"{stamp}.POST./jobs?x=1.".encode() + body
    out = subprocess.run(
        ["openssl", "dgst", "-sha256", "-hmac", SECRET, "-r"],
        input=message,
        capture_output=True,
        check=True,
    ).stdout
    headers = sign(SECRET, "post", "/jobs?x=1", body, timestamp=stamp)
    assert headers == {
        "X-Timestamp": str(stamp),
        "X-Signature": "sha256=" + out.decode().split()[0],
    }


# --- rate limit on the application API ----------------------------------------------------


def test_buckets_burst_refill_and_keys() -> None:
    now = [50.0]
    buckets = TokenBuckets(2.0, 3, clock=lambda: now[0])
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)
    assert buckets.take("b") == 0.0  # another token has its own bucket
    now[0] += 0.25
    assert buckets.take("a") == pytest.approx(0.25)  # half a token: still waiting
    now[0] += 0.25
    assert buckets.take("a") == 0.0
    now[0] -= 100  # a clock stepping back neither refills nor drains
    assert buckets.take("a") == pytest.approx(0.5)
    now[0] += 1000
    assert [buckets.take("a") for _ in range(4)][-1] > 0  # refills only up to the burst


def test_buckets_bounded() -> None:
    now = [0.0]
    buckets = TokenBuckets(1.0, 2, clock=lambda: now[0], max_buckets=3)
    for key in "abc":
        buckets.take(key)
    now[0] += 10  # a, b, c have refilled: forgetting them changes nothing
    buckets.take("d")
    assert buckets.keys == {"d"}
    for key in "efg":
        buckets.take(key)
    assert len(buckets.keys) <= 3


async def resolve(client: TestClient, headers: dict[str, str] = INGEST_AUTH) -> ClientResponse:
    return await client.get("/v1/prompts/support-bot/resolve?unit_id=u", headers=headers)


async def test_burst_then_429_with_retry_after(
    sqlite_engine: Engine, make_client: ClientMaker
) -> None:
    seed(sqlite_engine)
    client = await make_client(
        sqlite_engine, SETTINGS, app_rate_limit_per_second=0.01, app_rate_limit_burst=3
    )
    wrong = {"Authorization": "Bearer not-the-ingest-token"}
    for _ in range(5):  # refused callers spend nothing from the bucket
        assert (await resolve(client, wrong)).status == 401
    assert [(await resolve(client)).status for _ in range(3)] == [200, 200, 200]
    resp = await resolve(client)
    message = await error_of(resp, 429)
    assert "APP_RATE_LIMIT_PER_SECOND" in message
    assert resp.headers["Retry-After"] == "100"
    # One bucket per token across the application routes: ingest is limited too, and
    # writes nothing when refused.
    resp = await client.post(
        "/v1/conversations", data=json.dumps(record()).encode(), headers=INGEST_AUTH
    )
    await error_of(resp, 429)
    assert (await table_counts(sqlite_engine))["conversations"] == 0
    assert (await resolve(client, wrong)).status == 401  # bad tokens still get 401, not 429
    # Keyed by a hash, never the token itself.
    assert client.app[APP_RATE_LIMIT].keys == {token_key(INGEST)}
    assert INGEST not in token_key(INGEST)
    # The admin API is not rate limited.
    assert {(await client.get("/jobs", headers=ADMIN_AUTH)).status for _ in range(10)} == {200}


async def test_refill_with_injected_clock(sqlite_engine: Engine, make_client: ClientMaker) -> None:
    seed(sqlite_engine)
    now = [0.0]
    app = build_app(sqlite_engine, SETTINGS)
    app[APP_RATE_LIMIT] = TokenBuckets(0.25, 2, clock=lambda: now[0])
    client = await make_client.serve(app)
    assert [(await resolve(client)).status for _ in range(3)] == [200, 200, 429]
    assert (await resolve(client)).headers["Retry-After"] == "4"
    now[0] += 3.5
    resp = await resolve(client)
    assert resp.status == 429 and resp.headers["Retry-After"] == "1"  # 0.5 s, rounded up
    now[0] += 0.5
    assert [(await resolve(client)).status for _ in range(2)] == [200, 429]


async def test_rate_limit_disabled_at_zero(sqlite_engine: Engine, make_client: ClientMaker) -> None:
    seed(sqlite_engine)
    client = await make_client(
        sqlite_engine, SETTINGS, app_rate_limit_per_second=0, app_rate_limit_burst=1
    )
    assert APP_RATE_LIMIT not in client.app
    assert {(await resolve(client)).status for _ in range(30)} == {200}


# --- body and batch limits -----------------------------------------------------------------


@pytest.fixture
async def small_body_client(engine: Engine, make_client: ClientMaker) -> TestClient:
    """On SQLite and PostgreSQL, with MAX_BODY_BYTES at its minimum."""
    return await make_client(engine, SETTINGS, max_body_bytes=1024)


@pytest.mark.parametrize(
    ("path", "headers", "body"),
    [
        (
            "/v1/conversations",
            INGEST_AUTH,
            {"conversations": [record(unit_id=f"u{i}") for i in range(40)]},
        ),
        ("/jobs", ADMIN_AUTH, {"type": "pattern_analysis", "payload": {"pad": "x" * 2000}}),
        ("/prompts", ADMIN_AUTH, {"name": "big", "content": "x" * 2000}),
        ("/prompts/support-bot/versions", ADMIN_AUTH, {"content": "x" * 2000}),
        ("/experiments", ADMIN_AUTH, {"prompt": "support-bot", "variants": [2] * 500}),
    ],
)
@pytest.mark.parametrize("chunked", [False, True])
async def test_oversized_body_413_writes_nothing(
    small_body_client: TestClient,
    engine: Engine,
    path: str,
    headers: dict[str, str],
    body: Any,
    chunked: bool,
) -> None:
    seed(engine)
    raw = json.dumps(body).encode()
    assert len(raw) > 1024

    async def pieces() -> AsyncIterator[bytes]:
        for start in range(0, len(raw), 256):
            yield raw[start : start + 256]

    before = await table_counts(engine)
    resp = await small_body_client.post(path, data=pieces() if chunked else raw, headers=headers)
    message = await error_of(resp, 413)
    assert "1024 bytes" in message and "MAX_BODY_BYTES" in message
    assert await table_counts(engine) == before


async def test_batch_limit(sqlite_engine: Engine, make_client: ClientMaker) -> None:
    seed(sqlite_engine)
    client = await make_client(sqlite_engine, SETTINGS, app_rate_limit_per_second=0)
    rows = {"conversations": [record(unit_id=f"u{i}") for i in range(1001)]}
    resp = await client.post(
        "/v1/conversations", data=json.dumps(rows).encode(), headers=INGEST_AUTH
    )
    assert resp.status == 400
    assert "1000" in (await resp.json())["error"]
    assert (await table_counts(sqlite_engine))["conversations"] == 0
    rows["conversations"].pop()
    resp = await client.post(
        "/v1/conversations", data=json.dumps(rows).encode(), headers=INGEST_AUTH
    )
    assert resp.status == 202 and await resp.json() == {"accepted": 1000}


# --- SQL parameters ------------------------------------------------------------------------


TRANSCRIPT = "user: my card is 4111 1111 1111 1111 and I want a refund"


def test_failing_statement_never_shows_its_parameters(engine: Engine) -> None:
    """A statement's bound values (here a conversation's transcript and unit) are left out of
    the error it raises and of the traceback a log line carries, on both databases."""
    unknown_prompt = 987_654_321
    stmt = insert(Conversation).values(
        prompt_id=unknown_prompt,
        version_id=unknown_prompt,
        unit_id="unit-private-7c1d",
        transcript=TRANSCRIPT,
    )
    with pytest.raises(IntegrityError) as failed, engine.begin() as conn:
        conn.execute(stmt)
    record = logging.LogRecord(
        "prompt_worker.test",
        logging.ERROR,
        __file__,
        1,
        "failed",
        None,
        (failed.type, failed.value, failed.tb),
    )
    texts = [
        str(failed.value),
        repr(failed.value),
        KeyValueFormatter().format(record),
        JsonFormatter().format(record),
    ]
    assert "INSERT INTO conversations" in texts[0]  # the statement itself is still shown
    for text_ in texts:
        assert TRANSCRIPT not in text_ and "unit-private-7c1d" not in text_
