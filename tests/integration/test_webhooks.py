"""Outbound webhooks against a real local receiver (aiohttp on 127.0.0.1): signatures,
bodies, retries, giving up, and a dead receiver that never slows a job down."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.db import session_factory
from optimizer.errors import PermanentJobError
from optimizer.experiments import store
from optimizer.jobs.context import ActiveJob, Handler, ServiceContext
from optimizer.jobs.registry import default_handlers
from optimizer.run_stats import RunStats
from optimizer.runtime import queue
from optimizer.runtime.queue import NewJob
from optimizer.runtime.worker import Worker
from optimizer.webhooks import WebhookSender
from tests.support.experiments import add_conversations, arm_ids, seed_prompt
from tests.support.webhook_receiver import Receiver, receiving

SECRET = "a-long-random-webhook-secret"
FAST = Settings(
    poll_interval_seconds=0.05,
    lease_seconds=1.0,
    retry_base_seconds=0.0,
    job_timeout_seconds=30,
    shutdown_grace_seconds=0.5,
)


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with receiving(SECRET) as rec:
        yield rec


@pytest.fixture
def silent_port() -> Iterator[int]:
    """Accepts TCP connections and never answers: a hung receiver."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield sock.getsockname()[1]
    sock.close()


@pytest.fixture
async def senders() -> AsyncIterator[list[WebhookSender]]:
    made: list[WebhookSender] = []
    yield made
    for sender in made:
        await sender.stop(0)


def sender_for(senders: list[WebhookSender], url: str, **options: Any) -> WebhookSender:
    options = {
        "base_delay": 0.05,
        "max_delay": 0.2,
        "timeout": 2.0,
        "rng": random.Random(1),
        **options,
    }
    sender = WebhookSender(url, SECRET, **options)
    senders.append(sender)
    return sender


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(predicate):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


# --- the sender on its own ------------------------------------------------------------------


async def test_signed_delivery_with_headers_and_body(receiver, senders):
    sender = sender_for(senders, receiver.url)
    sender.start()
    delivery_id = sender.publish("job.finished", {"job_id": 7, "status": "completed"})
    await until(lambda: sender.delivered == 1)
    [(headers, body)] = receiver.requests
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Prompt-Worker-Event"] == "job.finished"
    assert headers["X-Prompt-Worker-Delivery"] == delivery_id
    [event] = receiver.bodies  # checks the signature
    assert set(event) == {"event", "id", "sent_at", "data"}
    assert (event["event"], event["id"]) == ("job.finished", delivery_id)
    assert event["data"] == {"job_id": 7, "status": "completed"}
    assert event["sent_at"].endswith("Z")


async def test_retries_after_500_and_429_then_succeeds(receiver, senders):
    receiver.statuses = [500, 429]
    sender = sender_for(senders, receiver.url)
    sender.start()
    sender.publish("experiment.decision", {"decision": "promote"})
    await until(lambda: sender.delivered == 1)
    assert len(receiver.requests) == 3
    # The same signed bytes and delivery id each time: the receiver can drop duplicates.
    assert len({body for _, body in receiver.requests}) == 1
    assert len({h["X-Prompt-Worker-Delivery"] for h, _ in receiver.requests}) == 1
    assert sender.given_up == 0


async def test_gives_up_after_the_attempts_with_a_warning(receiver, senders, caplog):
    receiver.statuses = [503] * 10
    sender = sender_for(senders, receiver.url, attempts=3)
    sender.start()
    sender.publish("job.finished", {"job_id": 1})
    await until(lambda: sender.given_up == 1)
    assert len(receiver.requests) == 3
    [warning] = [r for r in caplog.records if r.getMessage() == "webhook delivery given up"]
    assert warning.levelno == logging.WARNING
    assert warning.__dict__["error"] == "receiver answered 503"


async def test_a_refusal_is_not_retried(receiver, senders):
    receiver.statuses = [400]
    sender = sender_for(senders, receiver.url)
    sender.start()
    sender.publish("job.finished", {"job_id": 1})
    await until(lambda: sender.given_up == 1)
    assert len(receiver.requests) == 1


async def test_full_queue_drops_the_oldest(receiver, senders, caplog):
    sender = sender_for(senders, receiver.url, queue_size=2)
    for n in range(3):  # not started yet: all three wait in the queue
        sender.publish("job.finished", {"n": n})
    assert sender.dropped == 1 and "oldest event dropped" in caplog.text
    sender.start()
    await until(lambda: sender.delivered == 2)
    assert [e["data"]["n"] for e in receiver.bodies] == [1, 2]


async def test_stop_drains_what_is_queued(receiver, senders):
    sender = sender_for(senders, receiver.url)
    sender.start()
    for n in range(5):
        sender.publish("job.finished", {"n": n})
    await sender.stop(5)
    assert sender.delivered == 5 and len(receiver.requests) == 5


async def test_an_event_published_after_stop_is_counted_and_logged_not_lost_silently(
    receiver, senders, caplog
):
    """The HTTP server answers its last requests after the sender has drained: an action
    then is dropped with a warning, never queued where nothing would send it."""
    sender = sender_for(senders, receiver.url)
    sender.start()
    await sender.stop(1)
    with caplog.at_level(logging.WARNING, logger="prompt_worker.webhooks"):
        delivery_id = sender.publish("experiment.action", {"n": 1})
    assert sender.dropped == 1 and sender.delivered == 0
    assert any(
        r.getMessage() == "webhook event after shutdown not sent" and r.delivery == delivery_id
        for r in caplog.records
    )
    await asyncio.sleep(0.05)
    assert receiver.requests == []


async def test_stop_gives_up_on_a_hung_receiver_after_the_drain(silent_port, senders, caplog):
    sender = sender_for(senders, f"http://127.0.0.1:{silent_port}/hook", timeout=30)
    sender.start()
    for n in range(3):
        sender.publish("job.finished", {"n": n})
    await asyncio.sleep(0.1)  # the first one is on the wire now
    started = time.monotonic()
    await sender.stop(0.3)
    assert time.monotonic() - started < 2
    [warning] = [
        r for r in caplog.records if r.getMessage() == "webhook events not delivered at shutdown"
    ]
    assert warning.__dict__["undelivered"] == 3


async def test_publish_from_a_thread(receiver, senders):
    sender = sender_for(senders, receiver.url)
    sender.start()
    await asyncio.to_thread(sender.publish, "job.finished", {"from": "thread"})
    await until(lambda: sender.delivered == 1)
    assert receiver.bodies[0]["data"] == {"from": "thread"}


# --- wired into the worker and the monitoring job -------------------------------------------


def make_worker(engine: Engine, handlers: dict[str, Handler], sender: WebhookSender) -> Worker:
    ctx = ServiceContext(
        settings=FAST,
        engine=engine,
        sessions=session_factory(engine),
        stats=RunStats(),
        clock=utcnow,
        webhooks=sender,
    )
    return Worker(ctx, handlers, worker_id="w", rng=random.Random(1))


def add_job(engine: Engine, job_type: str, max_attempts: int = 3) -> int:
    return queue.enqueue(engine, NewJob(type=job_type), max_attempts=max_attempts, now=utcnow())[
        0
    ].id


def status_is(engine: Engine, job_id: int, *statuses: str) -> Callable[[], bool]:
    return lambda: queue.get_job(engine, job_id).status in statuses


async def test_one_event_per_final_outcome(engine, receiver, senders):
    release = asyncio.Event()

    async def ok(ctx: ServiceContext, job: ActiveJob) -> dict:
        return {"message": "all done", "big": "x" * 1000}

    async def broken(ctx: ServiceContext, job: ActiveJob) -> dict:
        raise RuntimeError("upstream broke")

    async def refused(ctx: ServiceContext, job: ActiveJob) -> dict:
        raise PermanentJobError("prompt 'x' does not exist")

    async def waits(ctx: ServiceContext, job: ActiveJob) -> dict:
        await release.wait()
        return {}

    sender = sender_for(senders, receiver.url)
    sender.start()
    worker = make_worker(
        engine,
        {
            "full_cycle": ok,
            "variant_generation": broken,
            "pattern_analysis": refused,
            "experiment_creation": waits,
        },
        sender,
    )
    done = add_job(engine, "full_cycle")
    retried_then_failed = add_job(engine, "variant_generation", max_attempts=2)
    failed = add_job(engine, "pattern_analysis")
    cancelled = add_job(engine, "experiment_creation")
    worker.start()
    try:
        await until(status_is(engine, cancelled, "running"))
        queue.cancel(engine, cancelled, now=utcnow())
        for job_id in (done, retried_then_failed, failed, cancelled):
            await until(status_is(engine, job_id, "completed", "failed", "cancelled"))
        await until(lambda: sender.delivered == 4)
    finally:
        release.set()
        await worker.stop(1)
    events = {e["data"]["job_id"]: e for e in receiver.bodies}
    assert len(receiver.requests) == 4  # the retried attempt sent nothing
    assert all(e["event"] == "job.finished" for e in events.values())
    assert {k: e["data"]["status"] for k, e in events.items()} == {
        done: "completed",
        retried_then_failed: "failed",
        failed: "failed",
        cancelled: "cancelled",
    }
    finished = events[done]["data"]
    assert finished["type"] == "full_cycle" and finished["attempts"] == 1
    assert finished["message"] == "all done" and "big" not in json.dumps(finished)
    assert events[retried_then_failed]["data"]["attempts"] == 2
    assert events[retried_then_failed]["data"]["error"] == "RuntimeError: upstream broke"


async def test_experiment_decisions_other_than_continue(engine, receiver, senders):
    seed_prompt(engine, "decided")
    seed_prompt(engine, "undecided")
    with session_factory(engine).begin() as session:
        decided = store.create_experiment(
            session, "decided", [2], now=utcnow() - timedelta(hours=25)
        ).id
        store.create_experiment(session, "undecided", [2], now=utcnow())
    control, variant = arm_ids(engine, decided)
    add_conversations(engine, decided, control, 400, 120)
    add_conversations(engine, decided, variant, 400, 240)
    sender = sender_for(senders, receiver.url)
    sender.start()
    worker = make_worker(engine, default_handlers(), sender)
    job_id = add_job(engine, "experiment_monitoring")
    worker.start()
    try:
        await until(status_is(engine, job_id, "completed"))
        await until(lambda: sender.delivered == 2)
    finally:
        await worker.stop(1)
    decisions = [e for e in receiver.bodies if e["event"] == "experiment.decision"]
    [decision] = decisions  # the undecided experiment's "continue" is not sent
    data = decision["data"]
    assert (data["experiment_id"], data["prompt"], data["decision"]) == (
        decided,
        "decided",
        "promote",
    )
    assert data["status"] == "completed" and data["winner_version"] == 2
    assert data["job_id"] == job_id and data["reason"]
    [headers] = [
        h for h, body in receiver.requests if json.loads(body)["event"] == "experiment.decision"
    ]
    assert headers["X-Prompt-Worker-Event"] == "experiment.decision"


async def test_dead_receiver_never_slows_or_fails_the_job(
    sqlite_engine, silent_port, senders, caplog
):
    caplog.set_level(logging.INFO, logger="prompt_worker.webhooks")

    async def ok(ctx: ServiceContext, job: ActiveJob) -> dict:
        return {"message": "fine"}

    # Each try waits out a 0.5 s timeout: about 1.7 s before the sender gives up.
    sender = sender_for(senders, f"http://127.0.0.1:{silent_port}/hook", attempts=3, timeout=0.5)
    sender.start()
    worker = make_worker(sqlite_engine, {"full_cycle": ok}, sender)
    first, second = add_job(sqlite_engine, "full_cycle"), add_job(sqlite_engine, "full_cycle")
    started = time.monotonic()
    worker.start()
    try:
        await until(status_is(sqlite_engine, second, "completed"))
        took = time.monotonic() - started
        assert sender.given_up == 0  # both jobs finished while the first delivery still tried
        assert queue.get_job(sqlite_engine, first).status == "completed"
        assert took < 1.5
        await until(lambda: sender.given_up == 2, timeout=15)
    finally:
        await worker.stop(1)
    assert sender.delivered == 0
    assert caplog.text.count("webhook delivery given up") == 2
