"""The sync Client against a scripted fake service: batches by size and by age, Retry-After,
retries with the same Idempotency-Key and bytes, refusals dropped and counted, the memory
bounds, flush, close, the context manager, a client garbage collected unclosed, and the
flush at interpreter exit."""

from __future__ import annotations

import gc
import logging
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from prompt_worker_client import Client, sync_client
from prompt_worker_client.protocol import encode_conversation

from tests.sdk.documents import ab_document
from tests.sdk.servers import Script, Seen, ThreadedServer, fake_service, wait_for
from tests.support.http_client import INGEST_TOKEN


@pytest.fixture
def script() -> Script:
    return Script(config=ab_document())


@pytest.fixture
def fake(script: Script) -> Iterator[ThreadedServer]:
    with fake_service(script) as server:
        yield server


def client_for(server: ThreadedServer, **options: Any) -> Client:
    options = {"flush_interval": 60.0, "close_timeout": 10.0, **options}
    return Client(server.url, INGEST_TOKEN, **options)


def record(n: int, **extra: Any) -> dict[str, Any]:
    return {"prompt": "plain", "version": 4, "unit_id": f"u{n}", "rating": 5, "n": n, **extra}


def sent_numbers(posts: list[Seen]) -> list[int]:
    return [row["n"] for post in posts for row in post.conversations()]


def test_batches_by_size_then_the_rest_on_flush(fake: ThreadedServer, script: Script) -> None:
    with client_for(fake, batch_size=10) as client:
        for n in range(25):
            client.log(record(n))
        # The fake records a batch before it answers, and the client counts it as sent only
        # on the answer: wait for both. The rest waits for its age (60 s) or a flush.
        wait_for(
            lambda: len(script.posted()) == 2 and client.stats.buffered == 5,
            what="two full batches sent and answered, five records left",
        )
        assert [len(p.conversations()) for p in script.posted()] == [10, 10]
        assert client.flush(timeout=10)
        posts = script.posted()
        assert [len(p.conversations()) for p in posts] == [10, 10, 5]
        assert sent_numbers(posts) == list(range(25))
        assert len({p.headers["Idempotency-Key"] for p in posts}) == 3
        assert all(p.headers["Authorization"] == f"Bearer {INGEST_TOKEN}" for p in posts)
        stats = client.stats
        assert (stats.logged, stats.sent, stats.batches_sent, stats.buffered) == (25, 25, 3, 0)


def test_batches_by_age(fake: ThreadedServer, script: Script) -> None:
    with client_for(fake, flush_interval=0.2) as client:
        for n in range(3):
            client.log(record(n))
        wait_for(lambda: len(script.posted()) == 1, what="the batch sent by age")
        assert sent_numbers(script.posted()) == [0, 1, 2]


def test_every_conversation_is_dated_when_logged(fake: ThreadedServer, script: Script) -> None:
    before = datetime.now(UTC)
    with client_for(fake) as client:
        client.log(record(1))
        client.log(record(2, occurred_at="2026-01-01T00:00:00Z"))
    rows = script.posted()[0].conversations()
    assert datetime.fromisoformat(rows[0]["occurred_at"]) >= before
    assert rows[1]["occurred_at"] == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_for_retry_after_and_resends_the_same_batch(
    fake: ThreadedServer, script: Script, form: str
) -> None:
    """Backoff alone would retry after at most 0.5 s: a gap of 2 s is Retry-After's."""
    if form == "seconds":
        header, wait = "2", 2.0
    else:
        # 4 to 5 s from now: the first attempt may take up to 2 s on a busy machine and
        # still leave a wait that backoff alone (at most 0.5 s) could not explain.
        at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=5)
        header, wait = format_datetime(at, usegmt=True), 2.0
    script.posts.append((429, {"Retry-After": header}, {"error": "over the rate limit"}))
    with client_for(fake) as client:
        for n in range(4):
            client.log(record(n))
        assert client.flush(timeout=20)
        first, second = script.posted()
        assert second.at - first.at >= wait - 0.05
        assert first.headers["Idempotency-Key"] == second.headers["Idempotency-Key"]
        assert first.body == second.body
        assert (client.stats.retries, client.stats.sent) == (1, 4)


def test_5xx_and_409_are_retried_with_the_same_key(fake: ThreadedServer, script: Script) -> None:
    script.posts += [
        (500, {}, {"error": "boom"}),
        (502, {}, None),
        (409, {}, {"error": "a prompt was deleted while storing; send it again", "field": None}),
        (503, {"Retry-After": "0"}, {"error": "database unavailable"}),
    ]
    with client_for(fake, max_backoff=0.2) as client:
        for n in range(3):
            client.log(record(n))
        assert client.flush(timeout=20)
        posts = script.posted()
        assert len(posts) == 5
        assert len({p.headers["Idempotency-Key"] for p in posts}) == 1
        assert len({p.body for p in posts}) == 1
        assert (client.stats.retries, client.stats.sent, client.stats.dropped_rejected) == (4, 3, 0)


@pytest.mark.parametrize(
    "answer",
    [
        (400, {}, {"error": "the body must be one record or a batch", "field": None}),
        (401, {"WWW-Authenticate": "Bearer"}, {"error": "missing or wrong bearer token"}),
        (409, {}, {"error": "key reused with another body", "field": "Idempotency-Key"}),
    ],
)
def test_a_refused_batch_is_dropped_counted_and_logged(
    fake: ThreadedServer, script: Script, answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    script.posts.append(answer)
    with caplog.at_level(logging.ERROR, "prompt_worker_client"), client_for(fake) as client:
        for n in range(3):
            client.log(record(n))
        assert client.flush(timeout=10)
        client.log(record(3))  # the next batch goes through
        assert client.flush(timeout=10)
        assert [len(p.conversations()) for p in script.posted()] == [3, 1]
        assert (client.stats.dropped_rejected, client.stats.sent) == (3, 1)
    assert answer[2]["error"] in caplog.text


def test_rows_the_service_names_are_dropped_and_the_rest_resent(
    fake: ThreadedServer, script: Script
) -> None:
    problems = [
        {"index": 1, "field": "rating", "problem": "must be 1..5 (a whole number); got 7"},
        {"index": 3, "field": "version", "problem": "no version 9 of prompt 'plain'"},
    ]
    script.posts.append((400, {}, {"error": "2 of 4 invalid", "field": None, "errors": problems}))
    with client_for(fake) as client:
        for n in range(4):
            client.log(record(n))
        assert client.flush(timeout=10)
        first, second = script.posted()
        assert sent_numbers([second]) == [0, 2]
        assert first.headers["Idempotency-Key"] != second.headers["Idempotency-Key"]
        assert (client.stats.dropped_rejected, client.stats.sent) == (2, 2)


def test_a_batch_too_large_is_split(fake: ThreadedServer, script: Script) -> None:
    script.posts += [(413, {}, {"error": "body too large"}), (413, {}, {"error": "too large"})]
    with client_for(fake) as client:
        for n in range(5):
            client.log(record(n))
        assert client.flush(timeout=10)
    sizes = [len(p.conversations()) for p in script.posted()]
    assert sizes == [5, 2, 1, 1, 3]  # 5 -> 2 + 3; the 2 -> 1 + 1
    assert sorted(sent_numbers(script.posted()[-3:])) == [0, 1, 2, 3, 4]


def test_a_full_buffer_drops_the_oldest_waiting_with_one_warning(
    fake: ThreadedServer, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    script.hold = threading.Event()  # the service hangs: nothing is delivered
    with caplog.at_level(logging.WARNING, "prompt_worker_client"):
        client = client_for(fake, batch_size=5, max_buffered=20)
        for n in range(5):
            client.log(record(n))
        wait_for(lambda: len(script.posted()) == 1, what="the first batch in flight")
        for n in range(5, 40):
            client.log(record(n))
        stats = client.stats
        assert (stats.logged, stats.dropped_overflow, stats.buffered) == (40, 20, 20)
        script.hold.set()
        assert client.flush(timeout=20)
        client.close()
    # The batch in flight is kept whole; of the rest, the newest 15 remain.
    assert sent_numbers(script.posted()) == [*range(5), *range(25, 40)]
    warnings = [r for r in caplog.records if "buffer full" in r.getMessage()]
    assert len(warnings) == 1


def test_the_bytes_bound_drops_the_oldest_waiting_with_one_warning(
    fake: ThreadedServer, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    """Few conversations, but long ones: the bound in bytes is what drops them."""
    script.hold = threading.Event()

    def long(n: int) -> dict[str, Any]:
        return record(n, transcript="x" * 1000, occurred_at="2026-12-01T09:00:00+00:00")

    size = len(encode_conversation(long(10), datetime.now(UTC)))  # the same for 10 to 99
    with caplog.at_level(logging.WARNING, "prompt_worker_client"):
        client = client_for(fake, batch_size=5, max_buffered=1000, max_buffered_bytes=12 * size)
        for n in range(10, 15):
            client.log(long(n))
        wait_for(lambda: len(script.posted()) == 1, what="the first batch in flight")
        for n in range(15, 40):
            client.log(long(n))
        stats = client.stats
        assert (stats.dropped_overflow, stats.buffered, stats.buffered_bytes) == (
            18,
            12,
            12 * size,
        )
        script.hold.set()
        assert client.flush(timeout=20)
        client.close()
    # The batch in flight is kept whole; of the rest, the newest 7 remain.
    assert sent_numbers(script.posted()) == [*range(10, 15), *range(33, 40)]
    assert len([r for r in caplog.records if "buffer full" in r.getMessage()]) == 1


def test_close_gives_up_after_its_timeout_and_counts_what_it_dropped(
    fake: ThreadedServer, script: Script
) -> None:
    script.posts += [(503, {"Retry-After": "60"}, {"error": "database unavailable"})]
    client = client_for(fake)
    for n in range(3):
        client.log(record(n))
    assert not client.flush(timeout=0.5)
    client.close(timeout=0.2)
    client.log(record(9))
    stats = client.stats
    assert (stats.dropped_at_close, stats.sent, stats.buffered) == (4, 0, 0)
    assert not any(t.is_alive() for t in client._threads)
    client.close()  # twice is fine


def test_the_context_manager_delivers_everything(fake: ThreadedServer, script: Script) -> None:
    with client_for(fake) as client:
        for n in range(7):
            client.log(record(n))
    assert sent_numbers(script.posted()) == list(range(7))
    assert client.stats.sent == 7 and not any(t.is_alive() for t in client._threads)


def test_records_that_cannot_be_sent_are_dropped_at_once(
    fake: ThreadedServer, script: Script
) -> None:
    with client_for(fake) as client:
        client.log(record(1, latency_ms=float("nan")))
        client.log({"prompt": "bot", "version": None, "unit_id": "u1"})  # served a fallback
        client.log(record(2))
        with pytest.raises(TypeError, match="takes a dict"):
            client.log([record(3)])  # type: ignore[arg-type]
    assert sent_numbers(script.posted()) == [2]
    assert client.stats.dropped_invalid == 2


def test_a_client_dropped_unclosed_is_collected_and_delivers_what_it_buffered(
    fake: ThreadedServer, script: Script
) -> None:
    client = client_for(fake)
    for n in range(4):
        client.log(record(n))
    collected, worker, threads = weakref.ref(client), client._worker, client._threads
    assert worker in sync_client._open
    del client
    gc.collect()
    assert collected() is None  # its threads and the exit hook do not keep it alive
    wait_for(lambda: not any(t.is_alive() for t in threads), what="its threads to end")
    assert sent_numbers(script.posted()) == list(range(4))
    # Leaving the set is the close's last step, just after its threads end: the exit hook
    # then has nothing left to wait for.
    wait_for(lambda: worker not in sync_client._open, what="the worker to leave the open set")


def test_flush_at_interpreter_exit(fake: ThreadedServer, script: Script) -> None:
    program = textwrap.dedent(
        f"""
        from prompt_worker_client import Client
        clients = [
            Client({fake.url!r}, {INGEST_TOKEN!r}, flush_interval=3600) for _ in range(2)
        ]
        for n in range(7):
            clients[n % 2].log(
                {{"prompt": "plain", "version": 4, "unit_id": f"u{{n}}", "n": n}}
            )
        print(sum(client.stats.sent for client in clients))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"  # nothing was sent before the exit
    assert sorted(sent_numbers(script.posted())) == list(range(7))
    assert len(script.posted()) == 2  # one batch from each client


def test_config_refresh_uses_the_etag(fake: ThreadedServer, script: Script) -> None:
    with client_for(fake) as client:
        assert client.ready
        config = client._core.config
        assert client.refresh()
        assert client._core.config is config  # 304: nothing parsed again
        gets = script.requests("GET", "/v1/config")
        assert "If-None-Match" not in gets[0].headers
        assert gets[-1].headers["If-None-Match"] == script.etag
        stats = client.stats
        assert (stats.config_loads, stats.config_not_modified) == (1, 1)
        assert stats.config_etag == script.etag


def test_a_document_it_cannot_evaluate_keeps_the_last_good_one(
    fake: ThreadedServer, script: Script, caplog: pytest.LogCaptureFixture
) -> None:
    with client_for(fake) as client:
        before = client.get_prompt("bot", "u1")
        newer = ab_document()
        newer["hashing"]["version"] = 2
        script.config, script.etag = newer, '"fake-2"'
        with caplog.at_level(logging.ERROR, "prompt_worker_client"):
            assert not client.refresh()
        assert client.get_prompt("bot", "u1") == before
        assert client.stats.config_rejected == 1
    assert "version 2 is not implemented" in caplog.text


def test_a_wrong_token_is_a_logged_refresh_failure(
    fake: ThreadedServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, "prompt_worker_client"):
        client = Client(fake.url, "wrong", fallback={"bot": "hello"}, close_timeout=1)
    with client:
        assert not client.ready and client.get_prompt("bot", "u1").content == "hello"
        assert client.stats.config_failures >= 1
    assert "401: missing or wrong bearer token" in caplog.text
    assert "wrong" not in caplog.text.replace("missing or wrong", "")  # the token is not logged


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="larger than batch_size"):
        Client("http://127.0.0.1:9", "t", batch_size=500, max_buffered=500)
    with pytest.raises(ValueError, match="batch_size must be from 1 to 1000"):
        Client("http://127.0.0.1:9", "t", batch_size=1001)
    with pytest.raises(ValueError, match="base_url"):
        Client("127.0.0.1:8081", "t")
    with pytest.raises(ValueError, match="token"):
        Client("http://127.0.0.1:9", " ")
    with pytest.raises(ValueError, match="flush_interval must be more than 0"):
        Client("http://127.0.0.1:9", "t", flush_interval=float("nan"))
    for wrong in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="max_buffered_bytes must be a whole number"):
            Client("http://127.0.0.1:9", "t", max_buffered_bytes=wrong)  # type: ignore[arg-type]


def test_slow_requests_never_block_the_caller(fake: ThreadedServer, script: Script) -> None:
    """log() and get_prompt() only touch memory: with the service hung they still return."""
    script.hold = threading.Event()
    with client_for(fake, batch_size=2) as client:
        for n in range(50):
            client.log(record(n))
            client.get_prompt("bot", f"u{n}")
        assert client.stats.logged == 50
        script.hold.set()
    assert client.stats.sent == 50
