"""AsyncClient: the same behaviour as Client on the application's event loop, against the
service's real app (answers, logging into the database, ETag, outage, cold start) and the
scripted fake (batches, Retry-After, retries with one key, the memory bound, close, one
client used on successive event loops)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from aiohttp import web
from prompt_worker_client import AsyncClient, PromptNotFound
from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from models.conversations import Conversation
from optimizer.client_config import build
from optimizer.resolve import resolve
from optimizer.routing import Routing
from tests.sdk.documents import ab_document
from tests.sdk.servers import Script, ThreadedServer, fake_service, live_service
from tests.sdk.test_delivery import record, sent_numbers
from tests.sdk.test_live import PROMPTS, seed_world, unit_ids
from tests.support.http_client import INGEST_TOKEN


async def until(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Wait on the loop for a background event; the deadline only guards against a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.01)


def connect(url: str, **options: Any) -> AsyncClient:
    options = {"init_timeout": 30, "close_timeout": 30, "flush_interval": 60.0, **options}
    return AsyncClient(url, INGEST_TOKEN, **options)


async def test_served_like_resolve_and_logged_once(engine: Engine) -> None:
    seed_world(engine)
    units = unit_ids(2000, seed_value=3)
    with live_service(engine) as server:
        async with connect(server.url, batch_size=500) as client:
            assert client.ready
            with Session(engine) as session:
                routing = Routing.from_config(build(session))
            for name in PROMPTS:
                for unit in units:
                    assert client.get_prompt(name, unit).to_dict() == routing.answer(name, unit)
            for unit in units[:50]:
                assert client.get_prompt("uneven", unit).to_dict() == resolve(
                    engine, "uneven", unit
                )
            served = {unit: client.get_prompt("uneven", unit) for unit in units[:1200]}
            for unit, answer in served.items():
                client.log({**answer.log_fields(), "unit_id": unit, "rating": 5})
            assert await client.flush(timeout=60)
            assert await client.refresh()
            stats = client.stats
            assert (stats.sent, stats.batches_sent, stats.config_not_modified) == (1200, 3, 1)
    with Session(engine) as session:
        rows = session.execute(select(Conversation.unit_id, Conversation.version_id)).all()
    assert set(rows) == {(unit, answer.version_id) for unit, answer in served.items()}
    assert len(rows) == 1200


async def test_an_outage_never_raises(sqlite_engine: Engine) -> None:
    seed_world(sqlite_engine)
    units = unit_ids(300)
    with live_service(sqlite_engine) as server:
        async with connect(server.url, refresh_interval=3600, max_backoff=0.2) as client:
            before = {unit: client.get_prompt("running", unit) for unit in units}
            server.stop()
            assert not await client.refresh()
            assert {unit: client.get_prompt("running", unit) for unit in units} == before
            for unit in units[:5]:
                client.log({**before[unit].log_fields(), "unit_id": unit, "success": False})
            assert not await client.flush(timeout=0.5)
            assert client.stats.config_failures == 1 and client.stats.buffered == 5
            server.start()
            assert await client.flush(timeout=30)
    with Session(sqlite_engine) as session:
        stored = session.scalars(select(Conversation.unit_id)).all()
    assert sorted(stored) == sorted(units[:5])


async def test_cold_start_serves_fallbacks() -> None:
    closed = ThreadedServer(web.Application)  # never started: its port refuses connections
    try:
        async with connect(closed.url, fallback={"bot": "Be brief."}) as client:
            assert not client.ready and client.get_prompt("bot", "u1").content == "Be brief."
            with pytest.raises(PromptNotFound):
                client.get_prompt("other", "u1")
            assert client.stats.config_failures >= 1
    finally:
        closed.close()


@pytest.fixture
def script() -> Script:
    return Script(config=ab_document())


@pytest.fixture
def fake(script: Script) -> Iterator[ThreadedServer]:
    with fake_service(script) as server:
        yield server


async def test_batches_by_size_and_by_age(fake: ThreadedServer, script: Script) -> None:
    async with connect(fake.url, batch_size=10) as client:
        for n in range(25):
            client.log(record(n))
        # The fake records a batch before it answers, and the client counts it as sent only
        # on the answer: wait for both.
        await until(
            lambda: len(script.posted()) == 2 and client.stats.buffered == 5,
            what="two full batches sent and answered, five records left",
        )
        assert await client.flush(timeout=10)
        assert [len(p.conversations()) for p in script.posted()] == [10, 10, 5]
    async with connect(fake.url, flush_interval=0.2) as client:
        client.log(record(99))
        await until(lambda: len(script.posted()) == 4, what="the batch sent by age")
    assert sent_numbers(script.posted()) == [*range(25), 99]


async def test_retry_after_and_one_key_per_batch(fake: ThreadedServer, script: Script) -> None:
    script.posts += [(429, {"Retry-After": "2"}, {"error": "slow down"}), (500, {}, None)]
    async with connect(fake.url, max_backoff=0.2) as client:
        for n in range(3):
            client.log(record(n))
        assert await client.flush(timeout=20)
        first, second, third = script.posted()
        assert second.at - first.at >= 2.0 - 0.05
        assert len({p.headers["Idempotency-Key"] for p in (first, second, third)}) == 1
        assert first.body == second.body == third.body
        assert (client.stats.retries, client.stats.sent) == (2, 3)


async def test_full_buffer_drops_the_oldest_waiting(
    fake: ThreadedServer, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.hold = threading.Event()
    with caplog.at_level(logging.WARNING, "prompt_worker_client"):
        client = connect(fake.url, batch_size=5, max_buffered=20)
        await client.start()
        for n in range(5):
            client.log(record(n))
        await until(lambda: len(script.posted()) == 1, what="the first batch in flight")
        for n in range(5, 40):
            client.log(record(n))
        assert (client.stats.dropped_overflow, client.stats.buffered) == (20, 20)
        script.hold.set()
        await client.close()
    assert sent_numbers(script.posted()) == [*range(5), *range(25, 40)]
    assert len([r for r in caplog.records if "buffer full" in r.getMessage()]) == 1


async def test_used_without_start_and_logged_from_another_thread(
    fake: ThreadedServer, script: Script
) -> None:
    client = connect(fake.url, batch_size=4)
    client.log(record(0))  # starts the tasks on this loop
    await asyncio.to_thread(lambda: [client.log(record(n)) for n in range(1, 4)])
    await until(lambda: len(script.posted()) == 1, what="a full batch logged from a thread")
    assert sent_numbers(script.posted()) == [0, 1, 2, 3]
    await client.close()
    await client.close()


async def test_close_gives_up_after_its_timeout(fake: ThreadedServer, script: Script) -> None:
    script.posts.append((503, {"Retry-After": "60"}, {"error": "database unavailable"}))
    client = connect(fake.url)
    await client.start()
    client.log(record(1))
    await client.close(timeout=0.3)
    client.log(record(2))
    assert (client.stats.dropped_at_close, client.stats.sent) == (2, 0)
    assert client._on_loop is not None
    assert all(task.done() for task in client._on_loop.tasks)


def test_one_client_outlives_its_event_loop(fake: ThreadedServer, script: Script) -> None:
    """Two asyncio.run() calls with one client (as a script, or a test framework creating a
    loop per test, does): between them nothing raises and what is logged is kept; on the
    second loop the tasks start again and deliver it."""
    client = connect(fake.url, batch_size=3)

    served: list[Any] = []

    async def first() -> None:
        await client.start()
        served.append(client.get_prompt("bot", "u1"))
        for n in range(4):
            client.log(record(n))
        await until(lambda: len(script.posted()) == 1, what="a full batch")

    asyncio.run(first())  # ends with record 3 buffered and the loop closed
    client.log(record(4))  # no loop running here
    with ThreadPoolExecutor(1) as elsewhere:
        elsewhere.submit(client.log, record(5)).result()  # would raise what log() raised
    assert client.get_prompt("bot", "u1") == served[0]
    assert client.stats.buffered == 3

    async def second() -> None:
        assert client.get_prompt("bot", "u1") == served[0]  # starts the tasks on this loop
        assert await client.flush(timeout=20)
        assert await client.refresh()
        await client.close()

    asyncio.run(second())
    assert sent_numbers(script.posted()) == list(range(6))
    stats = client.stats
    assert (stats.sent, stats.dropped_at_close, stats.config_failures) == (6, 0, 0)
    assert len(script.requests("GET", "/v1/config")) == 3  # a start on each loop, a refresh


def test_async_calls_on_another_running_loop_move_the_tasks_there(
    fake: ThreadedServer, script: Script
) -> None:
    """The tasks' events and HTTP client belong to their loop: awaiting flush() on another
    loop, while theirs still runs in another thread, stops them there and starts them here."""
    client = connect(fake.url)
    other = ThreadedServer(web.Application)  # only its event loop, running in a thread
    try:
        asyncio.run_coroutine_threadsafe(client.start(), other.loop).result(timeout=60)
        first = client._on_loop
        assert first is not None and first.loop is other.loop
        client.log(record(0))  # from this thread, with no loop: wakes the tasks over there

        async def here() -> None:
            assert await client.flush(timeout=20)
            assert client._on_loop is not first and all(t.done() for t in first.tasks)
            client.log(record(1))
            await client.close()

        asyncio.run(here())
    finally:
        other.close()
    assert sent_numbers(script.posted()) == [0, 1]
