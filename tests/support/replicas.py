"""Helpers for the fault tests (tests/faults): replicas of `prompt-worker run`, a fake Anthropic
API served from a background thread (the tests themselves are synchronous and block while
they poll), seeding prompts, raw SQL job inserts, and reading what the queue and the logs
say happened."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from sqlalchemy import text
from sqlalchemy.engine import Engine

from optimizer import db, prompts
from optimizer.demo.world import FIRST_PROMPT
from optimizer.runtime import queue
from tests.support.fake_anthropic import FakeAnthropic, Reply
from tests.support.procs import ServiceProcess, start_service

FAKE_KEY = "sk-ant-fault-tests-not-a-real-key"
# February 31st: a valid cron that never fires. A quarter-hour tick landing mid-test would
# add jobs the test did not ask for; tests that want ticks set the crons themselves.
NEVER = "0 0 31 2 *"
NO_TICKS = {"MONITORING_CRON": NEVER, "PATTERN_ANALYSIS_CRON": NEVER}

BILLING = (
    "When {{customer_name}} asks about billing, %s: confirm the account, quote the "
    "amounts and dates from the invoice and say what happens next."
)


def variants_reply(n: int = 3) -> str:
    """A reply of the model with `n` valid variants of FIRST_PROMPT."""
    tones = ("be precise", "be patient", "be thorough", "be brief", "be warm")[:n]
    return "Here are the versions.\n" + "\n".join(
        f"<improved_prompt>\n{FIRST_PROMPT}\n{BILLING % tone}\n</improved_prompt>\n"
        f"<change_notes>Adds billing guidance ({tone}).</change_notes>"
        for tone in tones
    )


def slow_reply(seconds: float, n: int = 1, chunk_size: int = 16, **changes: Any) -> Reply:
    """A streamed success whose text takes about `seconds` to arrive."""
    body = variants_reply(n)
    chunks = max(1, -(-len(body) // chunk_size))
    return Reply(text=body, chunk_delay=seconds / chunks, **changes)


def wait_until(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> float:
    """Poll `predicate` until it is truthy; return the seconds it took."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - start


@contextmanager
def replicas(url: str, log_dir: Path, count: int, **env: str) -> Iterator[list[ServiceProcess]]:
    """`count` `prompt-worker run` processes on `url`, healthy; killed on the way out.
    Cron ticks are off unless `env` sets MONITORING_CRON / PATTERN_ANALYSIS_CRON."""
    procs = [start_service(url, log_dir, **{**NO_TICKS, **env}) for _ in range(count)]
    try:
        for proc in procs:
            proc.wait_healthy(timeout=60)
        yield procs
    finally:
        for proc in procs:
            proc.kill()


def url_of(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


# ---- the fake Anthropic API, in a thread ---------------------------------------------------


class _RecordingFake(FakeAnthropic):
    """Also records when each request arrived and how many are being answered right now."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arrivals: list[float] = []
        self.in_flight = 0
        self.answered = 0

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        self.arrivals.append(time.monotonic())
        self.in_flight += 1
        try:
            return await super()._messages(request)
        finally:
            self.in_flight -= 1
            self.answered += 1


class _QuietDisconnects(logging.Filter):
    """A replica killed or stopped mid-stream leaves the fake writing to a closed socket;
    aiohttp logs that with a traceback. It is the point of those tests, not an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (record.threadName == "fake-anthropic" and isinstance(exc, ConnectionResetError))


class FakeApi:
    """FakeAnthropic running on its own event loop in a daemon thread, for service
    subprocesses to call while the test thread polls.

        with FakeApi(text=variants_reply()) as api:
            start_service(url, tmp_path, **api.env())
    """

    def __init__(self, text: str | None = None, **kwargs: Any) -> None:
        self.fake = _RecordingFake(text if text is not None else variants_reply(1), **kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="fake-anthropic"
        )

    def __enter__(self) -> FakeApi:
        server_log = logging.getLogger("aiohttp.server")
        if not any(isinstance(f, _QuietDisconnects) for f in server_log.filters):
            server_log.addFilter(_QuietDisconnects())
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.fake.__aenter__(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(
                self.fake.__aexit__(None, None, None), self._loop
            ).result(30)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def _on_loop(self, fn: Callable[[], None]) -> None:
        async def run() -> None:
            fn()

        asyncio.run_coroutine_threadsafe(run(), self._loop).result(10)

    def script(self, *replies: Reply) -> None:
        self._on_loop(lambda: self.fake.script(*replies))

    def always(self, model: str, reply: Reply) -> None:
        self._on_loop(lambda: self.fake.always(model, reply))

    @property
    def requests(self) -> int:
        return len(self.fake.requests)

    @property
    def arrivals(self) -> list[float]:
        return list(self.fake.arrivals)

    @property
    def in_flight(self) -> int:
        return self.fake.in_flight

    @property
    def answered(self) -> int:
        return self.fake.answered

    def env(self) -> dict[str, str]:
        return {
            "ANTHROPIC_BASE_URL": self.fake.base_url,
            "ANTHROPIC_API_KEY": FAKE_KEY,
            "LLM_PROVIDER": "anthropic",
        }


# ---- the database ----------------------------------------------------------------------------


def seed_prompt(engine: Engine, name: str, content: str = FIRST_PROMPT) -> None:
    """A prompt with version 1 active and no conversations (a full_cycle with
    always_generate then makes exactly one LLM call: the variants)."""
    with db.session_factory(engine).begin() as session:
        prompts.create_prompt(
            session, name, content, actor="fault-test", now=datetime.now(UTC) - timedelta(days=1)
        )


def insert_job(
    engine: Engine, job_type: str, payload: str | dict[str, Any] = "{}", **columns: Any
) -> int:
    """A job as an admin adds it: a plain SQL INSERT, the payload as raw text."""
    raw = payload if isinstance(payload, str) else json.dumps(payload)
    names = ["type", "payload", *columns]
    sql = (
        f"INSERT INTO optimization_jobs ({', '.join(names)}) "
        f"VALUES ({', '.join(':' + n for n in names)}) RETURNING id"
    )
    with engine.begin() as conn:
        return int(
            conn.execute(text(sql), {"type": job_type, "payload": raw, **columns}).scalar_one()
        )


def job(engine: Engine, job_id: int) -> queue.Job:
    return queue.get_job(engine, job_id)


def statuses(engine: Engine) -> Counter[str]:
    return Counter(queue.count_by_status(engine))


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def llm_calls(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id, job_id, model, outcome, cost_usd, error, "
                "created_at FROM llm_calls ORDER BY id"
            )
        ).mappings()
        return [dict(row) for row in rows]


# ---- the logs ----------------------------------------------------------------------------------


def completions(procs: list[ServiceProcess]) -> Counter[int]:
    """Per job id, how many times a replica recorded it as completed: `job finished` with
    outcome completed, less those whose outcome a replica then failed to record."""
    done: Counter[int] = Counter()
    for proc in procs:
        for event in proc.events("job finished"):
            if event.get("outcome") == "completed":
                done[int(event["job_id"])] += 1
        for event in proc.events("job outcome not recorded: lease no longer ours"):
            if event.get("outcome") == "completed":
                done[int(event["job_id"])] -= 1
    return done


def finished_by(procs: list[ServiceProcess]) -> list[int]:
    """How many jobs each replica finished (any outcome)."""
    return [len(proc.events("job finished")) for proc in procs]
