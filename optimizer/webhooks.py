"""Outbound webhooks: one signed POST per finished job, per experiment decision and per
person's action on an experiment.

`experiment.decision` carries the check's outcome (optimizer.experiments.monitor.CheckOutcome):
a winner that waits for a person (promotion mode approve) is decision `promote` with status
`awaiting_approval` and `winner_version` the version proposed; with status `completed` it
is active already. `experiment.action` carries a person's approve, reject, promote or stop
(optimizer.experiments.approvals.action_event), from the HTTP API, the dashboard and the
CLI; the CLI, which has no sender running, delivers it before it exits (`send_now`).

`publish` only puts the event on a bounded in-memory queue and returns; a background task
delivers it. A slow or dead receiver therefore never delays or fails a job: the queue fills,
the oldest events are dropped with a warning, and each delivery gives up after a few
retries. Deliveries are best effort, at most once per process: an event still queued when
the process stops (or crashes) is lost, and nothing is persisted.

Each body is signed once, so a retry resends the same bytes with the same delivery id and
a receiver can drop duplicates by `X-Prompt-Worker-Delivery`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiohttp

from optimizer.clock import iso, utcnow
from optimizer.config import Settings
from optimizer.runtime.backoff import retry_delay

log = logging.getLogger("prompt_worker.webhooks")

JOB_FINISHED = "job.finished"
EXPERIMENT_DECISION = "experiment.decision"
EXPERIMENT_ACTION = "experiment.action"
SIGNATURE_HEADER = "X-Prompt-Worker-Signature"
EVENT_HEADER = "X-Prompt-Worker-Event"
DELIVERY_HEADER = "X-Prompt-Worker-Delivery"
RETRY_STATUSES = frozenset({429}) | frozenset(range(500, 600))


def sign(secret: str, body: bytes) -> str:
    """The signature header's value: sha256=<hex HMAC-SHA256 of the raw body>."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Delivery:
    id: str
    event: str
    body: bytes


class WebhookSender:
    def __init__(
        self,
        url: str,
        secret: str,
        *,
        queue_size: int = 1000,
        attempts: int = 5,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        timeout: float = 5.0,
        rng: random.Random | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.url = url
        self._secret = secret
        self._queue: collections.deque[Delivery] = collections.deque()
        self._queue_size = queue_size
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._timeout = timeout
        self._rng = rng or random.Random()
        self._clock = clock
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self._inflight: Delivery | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.delivered = 0
        self.given_up = 0
        self.dropped = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSender | None:
        if not settings.webhook_url or not settings.webhook_secret:
            return None
        return cls(settings.webhook_url, settings.webhook_secret)

    # ---- producing (sync, never blocks) -------------------------------------------------

    def publish(self, event: str, data: dict[str, Any]) -> str:
        """Queue one event and return its delivery id. Never raises on delivery problems."""
        delivery_id = str(uuid.uuid4())
        body = json.dumps(
            {"event": event, "id": delivery_id, "sent_at": iso(self._clock()), "data": data},
            separators=(",", ":"),
            default=str,
        ).encode()
        delivery = Delivery(delivery_id, event, body)
        if self._stopped:
            # Shutdown has drained the queue; nothing would send this (an action the HTTP
            # server answered in the last moments).
            self.dropped += 1
            log.warning(
                "webhook event after shutdown not sent",
                extra={"event": event, "delivery": delivery_id},
            )
            return delivery_id
        loop = self._loop
        # The queue belongs to the event loop; a thread hands the event over.
        if loop is not None and not loop.is_closed() and not _on_loop(loop):
            loop.call_soon_threadsafe(self._put, delivery)
        else:
            self._put(delivery)
        return delivery_id

    def _put(self, delivery: Delivery) -> None:
        if len(self._queue) >= self._queue_size:
            dropped = self._queue.popleft()
            self.dropped += 1
            log.warning(
                "webhook queue full; oldest event dropped",
                extra={
                    "event": dropped.event,
                    "delivery": dropped.id,
                    "queue_size": self._queue_size,
                },
            )
        self._queue.append(delivery)
        self._idle.clear()
        self._ready.set()

    # ---- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._run(), name="webhooks")

    async def stop(self, drain_seconds: float = 5.0) -> None:
        """Give queued deliveries up to `drain_seconds`, then drop what is left."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), drain_seconds)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._stopped = True
        undelivered = len(self._queue) + (self._inflight is not None)
        if undelivered:
            log.warning(
                "webhook events not delivered at shutdown", extra={"undelivered": undelivered}
            )
        self._queue.clear()
        self._inflight = None

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self._timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                if not self._queue:
                    self._idle.set()
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                delivery = self._inflight = self._queue.popleft()
                try:
                    await self._deliver(session, delivery)
                except Exception as exc:  # a bug here must not end deliveries for good
                    log.error(
                        "webhook delivery crashed", exc_info=exc, extra={"delivery": delivery.id}
                    )
                self._inflight = None

    # ---- one delivery ---------------------------------------------------------------------

    def _headers(self, delivery: Delivery) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            EVENT_HEADER: delivery.event,
            DELIVERY_HEADER: delivery.id,
            SIGNATURE_HEADER: sign(self._secret, delivery.body),
            "User-Agent": "prompt-worker-webhooks",
        }

    async def _deliver(self, session: aiohttp.ClientSession, delivery: Delivery) -> bool:
        headers = self._headers(delivery)
        problem = ""
        for attempt in range(1, self._attempts + 1):
            retry_after: float | None = None
            try:
                async with session.post(
                    self.url, data=delivery.body, headers=headers, allow_redirects=False
                ) as resp:
                    status = resp.status
                    retry_after = _seconds(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = f"{type(exc).__name__}: {exc}".strip()[:200]
            else:
                if 200 <= status < 300:
                    self.delivered += 1
                    log.debug(
                        "webhook delivered", extra={"delivery": delivery.id, "attempt": attempt}
                    )
                    return True
                problem = f"receiver answered {status}"
                if status not in RETRY_STATUSES:
                    break  # the receiver refuses this event; sending it again will not help
            if attempt < self._attempts:
                await asyncio.sleep(self._delay(attempt, retry_after))
        self.given_up += 1
        log.warning(
            "webhook delivery given up",
            extra={"event": delivery.event, "delivery": delivery.id, "error": problem},
        )
        return False

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Our backoff with jitter; a receiver's Retry-After is honoured up to the cap."""
        delay = retry_delay(attempt, self._base_delay, self._rng, cap_seconds=self._max_delay)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._max_delay))
        return delay


def _seconds(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw is not None else None
    except ValueError:
        return None  # an HTTP date: rare enough to fall back to our own backoff
    return value if value is not None and value >= 0 else None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def job_finished_data(
    job_id: int,
    job_type: str,
    status: str,
    attempts: int,
    error: str | None,
    seconds: float,
    result: dict[str, Any] | None,
) -> dict[str, Any]:
    """What a job.finished event says. A handler's result may be large or hold prompt text,
    so only its one-line summary (`message`) is included."""
    message = result.get("message") if result else None
    return {
        "job_id": job_id,
        "type": job_type,
        "status": status,
        "attempts": attempts,
        "error": error[:1000] if error else None,
        "duration_seconds": round(seconds, 3),
        "message": message if isinstance(message, str) else None,
    }


def send_now(
    settings: Settings, event: str, data: dict[str, Any], drain_seconds: float = 5.0
) -> bool | None:
    """For a process without a running sender (the CLI): deliver one event, with the usual
    retries, waiting at most `drain_seconds`. True when it was delivered, False when not,
    None when webhooks are not configured."""
    sender = WebhookSender.from_settings(settings)
    if sender is None:
        return None

    async def deliver() -> None:
        sender.start()
        sender.publish(event, data)
        await sender.stop(drain_seconds)

    asyncio.run(deliver())
    return sender.delivered == 1
