"""HTTP servers on 127.0.0.1 for the SDK's tests, each on its own event loop in a thread, so
that the sync Client can talk to them from the test's thread: the service's real app
(`live_service`) and a scripted fake (`FakeService`) for answers the real one gives only in
rare conditions (429, 5xx, 413, a lost answer)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from tests.support.http_client import INGEST_TOKEN, build_app
from tests.support.procs import free_port

AUTH = f"Bearer {INGEST_TOKEN}"


class ThreadedServer:
    """Serves apps made by `make_app` on one port; stop() and start() again (a new app on the
    same port) stage an outage and a recovery."""

    def __init__(self, make_app: Callable[[], web.Application]) -> None:
        self.make_app = make_app
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> None:
        async def start() -> web.AppRunner:
            runner = web.AppRunner(self.make_app(), access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", self.port).start()
            return runner

        self.runner = self._run(start())

    def stop(self) -> None:
        if self.runner is not None:
            self._run(self.runner.cleanup())
            self.runner = None

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@contextmanager
def live_service(engine: Engine, **overrides: Any) -> Iterator[ThreadedServer]:
    """The service's own aiohttp app (optimizer.http.app_factory) on `engine`, with both
    tokens of tests.support.http_client and no rate limit unless overridden."""
    settings = {"app_rate_limit_per_second": 0, **overrides}
    server = ThreadedServer(lambda: build_app(engine, **settings))
    server.start()
    try:
        yield server
    finally:
        server.close()


@dataclass
class Seen:
    """One request the fake received."""

    at: float  # time.monotonic()
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def conversations(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(self.body)["conversations"]
        return rows


Answer = tuple[int, dict[str, str], Any]  # status, headers, JSON body (None: no body)


@dataclass
class Script:
    """What the fake answers: `posts` in turn for POST /v1/conversations (then 202), and
    `config` for GET /v1/config (with its ETag and 304 on a match) or `config_answers` in
    turn first. `hold` makes POSTs wait until it is set (a hung service)."""

    config: dict[str, Any] | None = None
    etag: str = '"fake-1"'
    config_answers: list[Answer] = field(default_factory=list)
    posts: list[Answer] = field(default_factory=list)
    hold: threading.Event | None = None
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def requests(self, method: str, path: str) -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.method == method and s.path == path]

    def posted(self) -> list[Seen]:
        return self.requests("POST", "/v1/conversations")


def fake_app(script: Script) -> web.Application:
    async def config(request: web.Request) -> web.Response:
        return await _config(script, request)

    async def conversations(request: web.Request) -> web.Response:
        return await _conversations(script, request)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/v1/config", config)
    app.router.add_post("/v1/conversations", conversations)
    return app


async def _record(script: Script, request: web.Request) -> Seen:
    body = await request.read()
    seen = Seen(time.monotonic(), request.method, request.path, dict(request.headers), body)
    with script.lock:
        script.seen.append(seen)
    return seen


def _answer(scripted: Answer) -> web.Response:
    status, headers, body = scripted
    if body is None:
        return web.Response(status=status, headers=headers)
    return web.json_response(body, status=status, headers=headers)


def _next(answers: list[Answer], script: Script) -> Answer | None:
    with script.lock:
        return answers.pop(0) if answers else None


async def _config(script: Script, request: web.Request) -> web.Response:
    await _record(script, request)
    if request.headers.get("Authorization") != AUTH:
        return _answer((401, {}, {"error": "missing or wrong bearer token", "field": None}))
    scripted = _next(script.config_answers, script)
    if scripted is not None:
        return _answer(scripted)
    if script.config is None:
        return _answer((503, {}, {"error": "no configuration scripted", "field": None}))
    if request.headers.get("If-None-Match") == script.etag:
        return web.Response(status=304, headers={"ETag": script.etag})
    return web.json_response(script.config, headers={"ETag": script.etag})


async def _conversations(script: Script, request: web.Request) -> web.Response:
    seen = await _record(script, request)
    if script.hold is not None:
        await asyncio.to_thread(script.hold.wait, 30)
    scripted = _next(script.posts, script)
    if scripted is not None:
        return _answer(scripted)
    return web.json_response({"accepted": len(seen.conversations())}, status=202)


@contextmanager
def fake_service(script: Script) -> Iterator[ThreadedServer]:
    server = ThreadedServer(lambda: fake_app(script))
    server.start()
    try:
        yield server
    finally:
        if script.hold is not None:
            script.hold.set()
        server.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
    """Wait for a background event, failing after `timeout` seconds (a deadline against
    hanging, not an assertion about speed)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.01)
