"""The pure parts of delivery: the buffer (batches by size and age, the memory bound in
conversations and in bytes, the batch kept intact across retries), what each answer means,
Retry-After and backoff, and how a conversation is encoded."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prompt_worker_client.backoff import MAX_RETRY_AFTER, backoff_delay, parse_retry_after
from prompt_worker_client.batching import Batch, Buffer
from prompt_worker_client.protocol import encode_conversation, judge_config, judge_send

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def keys() -> object:
    count = iter(range(1, 10**9))
    return lambda: f"key-{next(count)}"


def row(i: int, pad: int = 0) -> bytes:
    return json.dumps({"n": i, **({"pad": "x" * pad} if pad else {})}).encode()


def numbers(rows: list[tuple[int, bytes]]) -> list[int]:
    return [json.loads(body)["n"] for _, body in rows]


def test_a_batch_is_due_by_size_or_by_age() -> None:
    buffer = Buffer(3, 10, 1.0, keys())
    assert buffer.wait_time(0.0) is None
    assert buffer.add(row(1), 0.0) == (True, 0)  # the first row starts the clock
    assert buffer.add(row(2), 0.2) == (False, 0)
    assert buffer.wait_time(0.5) == pytest.approx(0.5)
    assert buffer.take(0.5) is None
    batch = buffer.take(1.0)  # the oldest has waited flush_interval
    assert batch is not None and numbers(batch.rows) == [1, 2] and batch.key == "key-1"
    assert buffer.done(batch) == 2 and len(buffer) == 0
    for i in range(3, 6):
        wake, _ = buffer.add(row(i), 2.0)
    assert wake  # the third row completes a batch
    batch = buffer.take(2.0)
    assert batch is not None and numbers(batch.rows) == [3, 4, 5]
    assert json.loads(batch.body) == {"conversations": [{"n": 3}, {"n": 4}, {"n": 5}]}


def test_a_retried_batch_keeps_its_rows_bytes_and_key() -> None:
    buffer = Buffer(2, 10, 1.0, keys())
    for i in range(4):
        buffer.add(row(i), 0.0)
    batch = buffer.take(0.0)
    assert batch is not None
    body, key = batch.body, batch.key
    buffer.retry_later(batch, 5.0, 0.0)
    assert buffer.take(4.9) is None and buffer.wait_time(4.9) == pytest.approx(0.1)
    again = buffer.take(5.0)
    assert again is batch and (again.body, again.key, again.attempts) == (body, key, 1)


def test_flush_sends_young_rows_and_settles() -> None:
    buffer = Buffer(5, 10, 60.0, keys())
    buffer.add(row(1), 0.0)
    buffer.add(row(2), 0.0)
    upto = buffer.request_flush()
    buffer.add(row(3), 0.0)  # after the flush: not waited for
    assert not buffer.settled(upto)
    batch = buffer.take(0.0)
    assert batch is not None and numbers(batch.rows) == [1, 2, 3]
    assert not buffer.settled(upto)
    buffer.done(batch)
    assert buffer.settled(upto)


def test_a_refused_batch_is_replaced_by_new_batches_with_new_keys() -> None:
    buffer = Buffer(4, 10, 1.0, keys())
    for i in range(4):
        buffer.add(row(i), 0.0)
    batch = buffer.take(0.0)
    assert batch is not None
    buffer.replace(batch, [batch.rows[:2], batch.rows[2:]])
    first = buffer.take(0.0)
    assert first is not None and numbers(first.rows) == [0, 1] and first.key == "key-2"
    buffer.done(first)
    second = buffer.take(0.0)
    assert second is not None and numbers(second.rows) == [2, 3] and second.key == "key-3"
    assert len(buffer) == 2


def test_clear_makes_an_answer_for_a_batch_in_flight_a_no_op() -> None:
    buffer = Buffer(2, 10, 1.0, keys())
    buffer.add(row(1), 0.0)
    batch = buffer.take(5.0)
    assert batch is not None and buffer.clear() == 1
    assert not buffer.is_current(batch) and buffer.done(batch) == 0
    buffer.retry_later(batch, 1.0, 0.0)
    buffer.replace(batch, [batch.rows])
    assert len(buffer) == 0


def test_batch_size_must_leave_room_to_drop_pending_rows() -> None:
    with pytest.raises(ValueError, match="less than max_buffered"):
        Buffer(10, 10, 1.0)
    with pytest.raises(ValueError, match="max_bytes must be at least 1"):
        Buffer(1, 10, 1.0, max_bytes=0)


def test_the_bytes_bound_drops_the_oldest_waiting_and_never_the_batch_in_flight() -> None:
    size = len(row(0, 40))  # the same for rows 0 to 9
    buffer = Buffer(2, 100, 60.0, keys(), max_bytes=4 * size)
    for i in range(3):
        assert buffer.add(row(i, 40), 0.0)[1] == 0
    batch = buffer.take(0.0)  # rows 0 and 1 in flight
    assert batch is not None and batch.size == 2 * size
    assert buffer.add(row(3, 40), 0.0)[1] == 0  # exactly at the bound: still room
    assert buffer.bytes == 4 * size
    assert buffer.add(row(4, 40), 0.0)[1] == 1  # row 2, the oldest waiting, makes room
    assert numbers(_pending_rows(buffer)) == [3, 4] and buffer.bytes == 4 * size
    assert buffer.add(row(5, 4 * size), 0.0)[1] == 3  # too large even alone: dropped, last
    assert numbers(_pending_rows(buffer)) == [] and buffer.bytes == batch.size
    assert buffer.done(batch) == 2 and buffer.bytes == 0


ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 30)),
        st.tuples(st.just("take"), st.just(0)),
        st.tuples(st.sampled_from(["done", "retry", "split", "drop_first"]), st.just(0)),
    ),
    max_size=60,
)


@given(
    batch_size=st.integers(1, 6),
    extra=st.integers(1, 10),
    max_bytes=st.none() | st.integers(1, 400),
    script=ops,
)
def test_bound_order_and_accounting(
    batch_size: int, extra: int, max_bytes: int | None, script: list
) -> None:
    """Whatever happens, the buffer holds at most max_buffered rows and max_bytes bytes,
    drops only the oldest rows not yet in a batch, keeps the order, and accounts for every
    row exactly once."""
    model = Model(Buffer(batch_size, batch_size + extra, 0.0, keys(), max_bytes=max_bytes))
    for op, count in script:
        if op == "add":
            model.add(count)
        elif op == "take":
            model.current = model.buffer.take(0.0)
        else:
            model.answer(op)
        model.check_bounds()
    while (batch := model.buffer.take(0.0)) is not None:
        model.finished += numbers(batch.rows)
        model.buffer.done(batch)
    assert model.finished == sorted(model.finished)  # order kept through splits and drops
    assert sorted(model.finished + sorted(model.dropped)) == list(range(model.logged))
    assert model.buffer.settled(model.buffer.last_seq) and model.buffer.bytes == 0


class Model:
    def __init__(self, buffer: Buffer) -> None:
        self.buffer = buffer
        self.logged = 0
        self.dropped: set[int] = set()
        self.finished: list[int] = []
        self.current: Batch | None = None

    def add(self, count: int) -> None:
        for _ in range(count):
            waiting = [*numbers(_pending_rows(self.buffer)), self.logged]
            _, drop = self.buffer.add(row(self.logged, self.logged * 37 % 90), 0.0)
            self.logged += 1
            assert numbers(_pending_rows(self.buffer)) == waiting[drop:]  # the oldest went
            self.dropped |= set(waiting[:drop])

    def check_bounds(self) -> None:
        buffer = self.buffer
        held = _pending_rows(buffer) + [r for batch in buffer._formed for r in batch.rows]
        assert buffer.bytes == sum(len(body) for _, body in held)
        assert len(buffer) == len(held) <= buffer.max_buffered
        assert buffer.max_bytes is None or buffer.bytes <= buffer.max_bytes

    def answer(self, op: str) -> None:
        batch = self.current
        if batch is None or not self.buffer.is_current(batch):
            return
        if op == "done":
            self.finished += numbers(batch.rows)
            self.buffer.done(batch)
        elif op == "retry":
            self.buffer.retry_later(batch, 0.0, 0.0)
        elif op == "split":
            half = len(batch.rows) // 2
            self.buffer.replace(batch, [batch.rows[:half], batch.rows[half:]])
        else:  # the service refused the first row
            self.finished.append(numbers(batch.rows)[0])
            self.buffer.replace(batch, [batch.rows[1:]])


def _pending_rows(buffer: Buffer) -> list[tuple[int, bytes]]:
    return [(seq, body) for seq, body, _ in buffer._pending]


@pytest.mark.parametrize(
    ("status", "headers", "body", "action"),
    [
        (202, {}, {"accepted": 4}, "delivered"),
        (429, {"Retry-After": "3"}, {"error": "slow down"}, "retry"),
        (500, {}, None, "retry"),
        (502, {}, None, "retry"),
        (503, {"Retry-After": "1"}, {"error": "database unavailable"}, "retry"),
        (408, {}, None, "retry"),
        (409, {}, {"error": "prompt deleted; send it again", "field": None}, "retry"),
        (409, {}, {"error": "key used", "field": "Idempotency-Key"}, "drop"),
        (413, {}, {"error": "too large"}, "split"),
        (401, {}, {"error": "missing or wrong bearer token", "field": None}, "drop"),
        (400, {}, {"error": "body is not a batch", "field": None}, "drop"),
        (
            400,
            {},
            {
                "error": "1 of 4 invalid",
                "errors": [{"index": 2, "field": "rating", "problem": "7"}],
            },
            "drop_rows",
        ),
        (404, {}, None, "drop"),
    ],
)
def test_what_each_answer_means(status: int, headers: dict, body: object, action: str) -> None:
    raw = b"" if body is None else json.dumps(body).encode()
    verdict = judge_send(status, headers, raw, 4, NOW)
    assert verdict.action == action
    if "Retry-After" in headers:
        assert verdict.retry_after == float(headers["Retry-After"])
    if action == "drop_rows":
        assert verdict.bad_rows == (2,) and "row 2 rating" in verdict.reason
    if action == "drop" and body is not None:
        assert body["error"] in verdict.reason  # type: ignore[index]


def test_refusals_that_cannot_shrink_drop_the_batch() -> None:
    every_row = {"error": "2 of 2", "errors": [{"index": 0}, {"index": 1}, {"index": 7}]}
    assert judge_send(400, {}, json.dumps(every_row).encode(), 2, NOW).action == "drop"
    assert judge_send(413, {}, b"", 1, NOW).action == "drop"
    assert judge_send(502, {}, b"<html>bad gateway</html>", 3, NOW).reason == (
        "502: <html>bad gateway</html>"
    )


def test_config_answers() -> None:
    assert judge_config(200, {}, b"{}", NOW).action == "load"
    assert judge_config(304, {}, b"", NOW).action == "not_modified"
    failed = judge_config(429, {"Retry-After": "20"}, b'{"error": "slow"}', NOW)
    assert (failed.action, failed.retry_after, failed.reason) == ("failed", 20.0, "429: slow")


@given(st.integers(min_value=0, max_value=10**6))
def test_retry_after_in_seconds(seconds: int) -> None:
    assert parse_retry_after(str(seconds), NOW) == min(seconds, MAX_RETRY_AFTER)


@given(st.integers(min_value=-1000, max_value=1000))
def test_retry_after_as_an_http_date(offset: int) -> None:
    header = format_datetime(NOW + timedelta(seconds=offset), usegmt=True)
    assert parse_retry_after(header, NOW) == min(max(offset, 0), MAX_RETRY_AFTER)


@pytest.mark.parametrize("header", [None, "", "soon", "nan", "inf", "-", "Mon, 99 Foo"])
def test_unreadable_retry_after_means_backoff(header: str | None) -> None:
    assert parse_retry_after(header, NOW) is None


@given(st.integers(1, 10_000), st.floats(0, 1, exclude_max=True))
def test_backoff_grows_and_is_capped(attempt: int, jitter: float) -> None:
    delay = backoff_delay(attempt, base=0.5, cap=30.0, jitter=jitter)
    ceiling = min(30.0, 0.5 * 2 ** min(attempt - 1, 60))
    assert ceiling / 2 <= delay <= ceiling and math.isfinite(delay)


def test_encoding_dates_the_conversation_when_it_is_logged() -> None:
    record = {"prompt": "bot", "version": 2, "unit_id": "ü-1", "success": True}
    encoded = json.loads(encode_conversation(record, NOW))
    assert encoded == {**record, "occurred_at": "2026-12-01T09:00:00+00:00"}
    given_time = {**record, "occurred_at": "2026-11-01T00:00:00Z"}
    assert json.loads(encode_conversation(given_time, NOW)) == given_time
    assert "occurred_at" not in record  # the caller's dict is left alone


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"prompt": "bot", "unit_id": "u"}, "version is missing"),
        ({"prompt": "bot", "version": None, "unit_id": "u"}, "fallback"),
        ({"version": 1, "unit_id": "u"}, "prompt is missing"),
        ({"prompt": "bot", "version": 1, "unit_id": "  "}, "unit_id is blank"),
        ({"prompt": "bot", "version": 1, "unit_id": "u", "latency_ms": math.nan}, "not JSON"),
        ({"prompt": "bot", "version": 1, "unit_id": "u", "tags": {1, 2}}, "not JSON"),
        ({"prompt": "bot", "version": 1, "unit_id": "u", "segment": "\udc00"}, "surrogate"),
    ],
)
def test_records_that_cannot_be_sent(record: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        encode_conversation(record, NOW)
