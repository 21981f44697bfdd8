"""Structured logs in both formats: every line a job emits, from the worker and from inside
its handler (and the threads the handler starts), carries job_id, job_type and attempt."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import random
import time
import warnings
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine
from yarl import URL

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import create_db_engine, session_factory
from optimizer.jobs.context import ActiveJob, ServiceContext
from optimizer.logs import make_handler, setup_logging
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from optimizer.runtime.worker import Worker
from tests.support.kv import parse_kv_strictly
from tests.support.procs import LOG_FIELD

FAST = Settings(
    poll_interval_seconds=0.05,
    lease_seconds=1.0,
    retry_base_seconds=0.0,
    job_timeout_seconds=30,
    shutdown_grace_seconds=0.5,
    worker_concurrency=2,
)
handler_log = logging.getLogger("prompt_worker.jobs.test_handler")
SECRET_KEY = "sk-ant-api03-abcdefghijklmnop"
SECRET_TOKEN = "Bearer s3cr3t-admin-token-value"


@pytest.fixture
def captured(request) -> Iterator[io.StringIO]:
    """Root logs in the format named by the test's `fmt` param, into a buffer."""
    stream = io.StringIO()
    handler = make_handler(request.param, stream)
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(old_level)


def parse_kv(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in LOG_FIELD.findall(line)}


PARSERS: dict[str, Callable[[str], dict]] = {"json": json.loads, "kv": parse_kv}


async def chatty(ctx: ServiceContext, job: ActiveJob) -> dict:
    marker = job.payload["marker"]
    handler_log.info("inside handler", extra={"marker": marker})
    await asyncio.sleep(0.1)  # the other slot's job runs meanwhile
    await asyncio.to_thread(handler_log.info, "inside thread", extra={"marker": marker})
    handler_log.warning("leaky %s", SECRET_KEY, extra={"auth": SECRET_TOKEN})
    return {}


async def run_jobs(engine: Engine, markers: list[str]) -> dict[str, int]:
    ctx = ServiceContext(
        settings=FAST,
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=utcnow,
    )
    worker = Worker(ctx, {"full_cycle": chatty}, worker_id="w", rng=random.Random(1))
    ids = {
        m: queue.enqueue(
            engine, NewJob(type="full_cycle", payload={"marker": m}), max_attempts=3, now=utcnow()
        )[0].id
        for m in markers
    }
    worker.start()
    deadline = time.monotonic() + 15
    try:
        while not all(queue.get_job(engine, i).status == "completed" for i in ids.values()):
            assert time.monotonic() < deadline, "jobs did not complete"
            await asyncio.sleep(0.05)
    finally:
        await worker.stop(1)
    return ids


@pytest.mark.parametrize("captured", ["json", "kv"], indirect=True)
async def test_every_job_line_carries_the_job(sqlite_engine, captured):
    ids = await run_jobs(sqlite_engine, ["first", "second"])
    fmt = "json" if captured.getvalue().startswith("{") else "kv"
    lines = [PARSERS[fmt](line) for line in captured.getvalue().splitlines()]
    assert lines and all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)

    inside = [line for line in lines if line["msg"] in ("inside handler", "inside thread")]
    assert len(inside) == 4
    for line in inside:
        # Each line names its own job, though the two jobs ran side by side.
        assert str(line["job_id"]) == str(ids[line["marker"]])
        assert line["job_type"] == "full_cycle"
        assert str(line["attempt"]) == "1"
        assert line["logger"] == "prompt_worker.jobs.test_handler"
    for msg in ("job started", "job finished"):
        assert {str(line["job_id"]) for line in lines if line["msg"] == msg} == {
            str(i) for i in ids.values()
        }
    # Outside a job: no job fields.
    [started] = [line for line in lines if line["msg"] == "worker started"]
    assert "job_id" not in started
    if fmt == "json":
        assert isinstance(inside[0]["job_id"], int) and inside[0]["attempt"] == 1


@pytest.mark.parametrize("captured", ["json", "kv"], indirect=True)
async def test_secrets_are_scrubbed(sqlite_engine, captured):
    await run_jobs(sqlite_engine, ["only"])
    text = captured.getvalue()
    assert "leaky sk-ant-[redacted]" in text
    assert SECRET_KEY not in text and "s3cr3t-admin-token-value" not in text


def test_json_lines_keep_extras_exceptions_and_cut_long_values():
    stream = io.StringIO()
    log = logging.getLogger("prompt_worker.test_json")
    log.addHandler(handler := make_handler("json", stream))
    log.propagate = False
    try:
        log.warning(
            "transcript",
            extra={
                "count": 3,
                "ratio": 0.5,
                "ok": True,
                "none": None,
                "text": "x" * 10_000,
                "level": "not the frame's",
            },
        )
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("failed")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["msg"] == "transcript" and first["level"] == "warning"
    assert first["x_level"] == "not the frame's"
    assert (first["count"], first["ratio"], first["ok"], first["none"]) == (3, 0.5, True, None)
    assert len(first["text"]) < 2100 and first["text"].endswith("(+8000 chars)")
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


def test_setup_logging_picks_the_format():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        stream = io.StringIO()
        setup_logging("INFO", "json", stream)
        logging.getLogger("prompt_worker.test").info("hello", extra={"n": 1})
        assert json.loads(stream.getvalue()) | {"ts": None} == {
            "ts": None,
            "level": "info",
            "logger": "prompt_worker.test",
            "msg": "hello",
            "n": 1,
        }
        stream = io.StringIO()
        setup_logging("INFO", "kv", stream)
        logging.getLogger("prompt_worker.test").info("hello", extra={"n": 1})
        assert parse_kv(stream.getvalue())["n"] == "1"
        with pytest.raises(ValueError, match="kv, json"):
            setup_logging("INFO", "xml", stream)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


def test_warnings_become_one_structured_line():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        stream = io.StringIO()
        # Another test's setup_logging may have captured warnings already, under a warnings
        # state pytest has since restored: start from scratch, as a process does.
        logging.captureWarnings(False)
        setup_logging("INFO", "kv", stream)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("divide by zero\nencountered in log", RuntimeWarning, stacklevel=1)
        lines = stream.getvalue().splitlines()
        assert len(lines) == 1, lines
        assert parse_kv(lines[0])["logger"] == "py.warnings"
    finally:
        logging.captureWarnings(False)
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


async def test_request_path_cannot_forge_a_kv_line(tmp_path, make_client):
    """A resolve whose path holds CR, ESC, LF, U+2028 and a fake `ts=` pair, answered while
    the database is down: the request's log line keeps the path inside its own value. (A NUL
    in a name is refused with a 400 before any query, so it never reaches this line.)"""
    down = create_db_engine(f"sqlite:///{tmp_path / 'missing-dir' / 'db.sqlite'}")
    stream = io.StringIO()
    handler = make_handler("kv", stream)
    logging.getLogger().addHandler(handler)
    client = await make_client(down, Settings(ingest_token="ingest-token"))
    forged = "x%0d%1b%5b2Kts=FAKE%20level=error%0a%e2%80%a8msg=%22pwned%22%7f%c2%9b"
    try:
        resp = await client.get(
            URL(f"/v1/prompts/{forged}/resolve?unit_id=u", encoded=True),
            headers={"Authorization": "Bearer ingest-token"},
        )
        assert resp.status == 503, await resp.text()
    finally:
        await client.close()
        logging.getLogger().removeHandler(handler)
        down.dispose()
    lines = stream.getvalue().splitlines()
    request_lines = [line for line in lines if "database unavailable during request" in line]
    assert len(request_lines) == 1, lines
    [line] = request_lines
    assert line.isprintable(), ascii(line)
    fields = parse_kv_strictly(line)
    assert [key for key, _ in fields] == ["ts", "level", "logger", "msg", "method", "path", "error"]
    assert dict(fields)["path"] == (
        '/v1/prompts/x\r\x1b[2Kts=FAKE level=error\n\u2028msg="pwned"\x7f\x9b/resolve'
    )
