"""The sync Client against the service's real app on a free port: it fetches GET /v1/config
over HTTP and answers every unit exactly as the service's resolve does (100,000 unit ids);
logged conversations land in the database once, a retry after a lost answer included; the
ETag saves re-reading an unchanged configuration; an outage and a cold start never raise."""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from aiohttp import ClientSession, web
from hypothesis import given, settings
from hypothesis import strategies as st
from prompt_worker_client import Client, InvalidUnitId, PromptNotFound, ServedPrompt
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from models.experiments import ExperimentArm
from optimizer.client_config import build
from optimizer.errors import Conflict, InvalidInput
from optimizer.resolve import check_unit_id, resolve
from optimizer.routing import Routing
from tests.integration.test_ingest import World, seed
from tests.sdk.servers import ThreadedServer, live_service, wait_for
from tests.support.http_client import INGEST_TOKEN

PROMPTS = ("running", "uneven", "paused", "plain")


def seed_world(engine: Engine) -> dict[str, World]:
    """A running experiment with uneven weights and a stopped arm, one with weights that are
    not sums of powers of two, a paused one, a prompt without experiment, and one without an
    active version."""
    return {
        "running": seed(engine, "running", experiment=[(1, 1.0), (2, 3.0), (3, 0.5)], stopped=[3]),
        "uneven": seed(engine, "uneven", experiment=[(1, 0.1), (2, 0.2), (3, 0.7)]),
        "paused": seed(engine, "paused", experiment=[(1, 1.0), (2, 1.0)], status="paused"),
        "plain": seed(engine, "plain", active=2),
        "no-active": seed(engine, "no-active", active=None),
    }


def unit_ids(count: int, seed_value: int = 13) -> list[str]:
    """Distinct ids as applications send them, and a fifth drawn from all of Unicode (any
    plane, combining marks, white space inside), each one the service accepts."""
    rng = random.Random(seed_value)
    units: dict[str, None] = {}
    while len(units) < count:
        if len(units) % 5:
            units[f"user-{len(units)}"] = None
            continue
        length = rng.choice((1, 2, 8, 40, 200))
        text = "".join(chr(_code_point(rng)) for _ in range(length))
        if text.strip():
            units[text] = None
    return list(units)


def _code_point(rng: random.Random) -> int:
    low, high = rng.choice(((0x20, 0x7F), (0xA0, 0xD800), (0xE000, 0x110000)))
    return rng.randrange(low, high)


@pytest.fixture
def world(sqlite_engine: Engine) -> dict[str, World]:
    return seed_world(sqlite_engine)


@pytest.fixture
def server(sqlite_engine: Engine, world: dict[str, World]) -> Iterator[ThreadedServer]:
    with live_service(sqlite_engine) as live:
        yield live


def connect(server: ThreadedServer, **options: Any) -> Client:
    return Client(server.url, INGEST_TOKEN, init_timeout=30, close_timeout=30, **options)


def http_resolve(http: httpx.Client, name: str, unit: str) -> dict[str, Any]:
    answer = http.get(f"/v1/prompts/{name}/resolve", params={"unit_id": unit})
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_100000_unit_ids_get_what_the_service_resolves(
    sqlite_engine: Engine, server: ThreadedServer
) -> None:
    """Every unit, on every prompt: the SDK's answer from the configuration it fetched over
    HTTP equals the service's resolve. resolve(session, ...) reads the configuration and
    evaluates it with optimizer.routing; that evaluation is run here on one reading (the
    database read per call would take minutes), and tied to resolve itself and to the HTTP
    route on a sample."""
    with connect(server) as client:
        assert client.ready and client.stats.config_loads == 1
        with Session(sqlite_engine) as session:
            routing = Routing.from_config(build(session))
        units = unit_ids(100_000)
        for name in PROMPTS:
            mismatches = [
                unit
                for unit in units
                if client.get_prompt(name, unit).to_dict() != routing.answer(name, unit)
            ]
            assert mismatches == [], (name, len(mismatches), mismatches[:5])
        sample = units[:: len(units) // 200]
        auth = {"Authorization": f"Bearer {INGEST_TOKEN}"}
        with httpx.Client(base_url=server.url, headers=auth) as http:
            for name in PROMPTS:
                for unit in sample:
                    served = client.get_prompt(name, unit).to_dict()
                    assert served == resolve(sqlite_engine, name, unit)
                    assert served == http_resolve(http, name, unit)
        # Every slice was reached, the stopped arm's (served the control) included.
        arms = {client.get_prompt("running", unit).arm for unit in units}
        assert {(arm.id, arm.role) for arm in arms if arm} == {(1, "control"), (2, "variant")}
        with pytest.raises(Conflict):
            resolve(sqlite_engine, "no-active", "u1")
        with pytest.raises(PromptNotFound) as caught:
            client.get_prompt("no-active", "u1")
        assert caught.value.reason == "no_active_version"


def test_any_unit_id_is_answered_or_refused_like_resolve(
    sqlite_engine: Engine, server: ThreadedServer
) -> None:
    with connect(server) as client:
        with Session(sqlite_engine) as session:
            routing = Routing.from_config(build(session))

        @settings(max_examples=300, deadline=None)
        @given(name=st.sampled_from(PROMPTS), unit=st.text(max_size=210))
        def check(name: str, unit: str) -> None:
            try:
                check_unit_id(unit)
            except InvalidInput:
                with pytest.raises(InvalidUnitId):
                    client.get_prompt(name, unit)
                return
            assert client.get_prompt(name, unit).to_dict() == routing.answer(name, unit)

        check()


def test_a_stopped_arm_and_a_new_version_reach_the_sdk(
    sqlite_engine: Engine, world: dict[str, World], server: ThreadedServer
) -> None:
    units = unit_ids(3000)
    with connect(server, refresh_interval=3600) as client:
        tag = client.stats.config_etag
        config = client._core.config
        assert client.refresh() and client._core.config is config  # 304: the same document
        assert client.stats.config_not_modified == 1
        before = {unit: client.get_prompt("running", unit) for unit in units}
        running = world["running"]
        with Session(sqlite_engine) as session, session.begin():
            arm = session.get(ExperimentArm, running.arms[2])
            assert arm is not None
            arm.status = "stopped"
        # The service sees the change within its staleness bound (1 s); wait for it.
        wait_for(lambda: client.refresh() and client.stats.config_etag != tag, what="new config")
        assert client.stats.config_loads == 2
        for index, unit in enumerate(units):
            after = client.get_prompt("running", unit)
            if index < 300:  # resolve reads the database each call
                assert after.to_dict() == resolve(sqlite_engine, "running", unit)
            if before[unit].version == 2:
                assert after.arm is not None and after.arm.role == "control"
            else:
                assert after == before[unit]


def test_an_outage_never_raises_and_delivery_resumes(
    sqlite_engine: Engine, server: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    units = unit_ids(500)
    client = connect(server, refresh_interval=3600, max_backoff=0.2)
    before = {unit: client.get_prompt("running", unit) for unit in units}
    server.stop()
    with caplog.at_level(logging.WARNING, "prompt_worker_client"):
        assert not client.refresh()
        assert not client.refresh()
        assert {unit: client.get_prompt("running", unit) for unit in units} == before
        for unit in units[:10]:
            client.log({**before[unit].log_fields(), "unit_id": unit, "success": True})
        assert not client.flush(timeout=0.5)  # refused connections: retried, not dropped
    stats = client.stats
    assert stats.config_failures == 2 and stats.retries >= 1 and stats.buffered == 10
    assert stats.dropped_rejected == stats.dropped_overflow == 0
    assert len([r for r in caplog.records if "refresh failed" in r.getMessage()]) == 1
    server.start()
    assert client.flush(timeout=30)
    assert client.refresh()
    client.close()
    with Session(sqlite_engine) as session:
        stored = session.scalars(select(Conversation.unit_id)).all()
    assert sorted(stored) == sorted(units[:10])


def test_cold_start_with_the_service_unreachable_serves_fallbacks(
    sqlite_engine: Engine, world: dict[str, World]
) -> None:
    server = ThreadedServer(web.Application)  # not started yet: its port refuses connections
    try:
        client = Client(server.url, INGEST_TOKEN, fallback={"running": "Be helpful."})
        server.make_app = lambda: _service_app(sqlite_engine)
        with client:
            assert not client.ready
            assert client.get_prompt("running", "u1") == ServedPrompt(
                "running", "Be helpful.", None, None, fallback=True
            )
            with pytest.raises(PromptNotFound) as caught:
                client.get_prompt("plain", "u1")
            assert caught.value.reason == "no_config"
            assert client.stats.config_failures >= 1 and client.stats.fallbacks_served == 1
            server.start()
            assert client.refresh() and client.ready
            served = client.get_prompt("running", "u1")
            assert not served.fallback and served.to_dict() == resolve(
                sqlite_engine, "running", "u1"
            )
    finally:
        server.close()


def _service_app(engine: Engine) -> web.Application:
    from tests.support.http_client import build_app

    return build_app(engine, app_rate_limit_per_second=0)


def test_logged_conversations_are_stored_as_served(engine: Engine) -> None:
    """On SQLite and PostgreSQL: what get_prompt served is what resolve answers, and every
    logged conversation is stored once with the version and arm it was served."""
    seed_world(engine)
    units = unit_ids(1200, seed_value=7)
    with live_service(engine) as server, connect(server, batch_size=500) as client:
        served = {unit: client.get_prompt("running", unit) for unit in units}
        for unit in units[:150]:
            assert served[unit].to_dict() == resolve(engine, "running", unit)
        for unit in units:
            client.log({**served[unit].log_fields(), "unit_id": unit, "success": True})
        assert client.flush(timeout=60)
        stats = client.stats
        assert (stats.sent, stats.batches_sent, stats.dropped_rejected) == (1200, 3, 0)
    with Session(engine) as session:
        rows = session.execute(
            select(Conversation.unit_id, Conversation.version_id, Conversation.arm_id)
        ).all()
    expected = {(u, s.version_id, s.arm.id if s.arm else None) for u, s in served.items()}
    assert len(rows) == 1200 and set(rows) == expected


def lossy_proxy(target: str, lost: list[int]) -> web.Application:
    """Forwards to the service; the first POST's answer is replaced by a 503 after the
    service stored the batch (an answer lost on the way back)."""

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() != "host"}
        async with (
            ClientSession() as session,
            session.request(
                request.method, target + request.path_qs, data=body, headers=headers
            ) as answer,
        ):
            payload = await answer.read()
            status = answer.status
            etag = answer.headers.get("ETag")
        if request.method == "POST":
            lost.append(status)
            if len(lost) == 1:
                return web.json_response({"error": "bad gateway"}, status=503)
        return web.Response(
            status=status,
            body=payload or None,
            headers={"ETag": etag} if etag else None,
            content_type="application/json" if payload else None,
        )

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def test_a_retry_after_a_lost_answer_is_stored_once(engine: Engine) -> None:
    seed_world(engine)
    answers: list[int] = []
    with live_service(engine) as server:
        proxy = ThreadedServer(lambda: lossy_proxy(server.url, answers))
        proxy.start()
        try:
            with Client(proxy.url, INGEST_TOKEN, max_backoff=0.2, close_timeout=30) as client:
                for unit in (f"unit-{n}" for n in range(5)):
                    served = client.get_prompt("running", unit)
                    client.log({**served.log_fields(), "unit_id": unit, "rating": 4})
                assert client.flush(timeout=30)
                assert (client.stats.retries, client.stats.sent) == (1, 5)
        finally:
            proxy.close()
    assert answers == [202, 202]  # stored the first time, answered again the second
    with Session(engine) as session:
        units = session.scalars(select(Conversation.unit_id)).all()
    assert sorted(units) == [f"unit-{n}" for n in range(5)]
