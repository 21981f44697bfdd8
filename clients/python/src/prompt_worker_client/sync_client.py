"""Client: the SDK for threaded applications (Flask, Django, plain scripts).

Two daemon threads do the I/O: one refreshes the configuration, one sends batches. The
application's threads only touch memory: get_prompt evaluates the cached configuration,
log appends to the buffer.
"""

from __future__ import annotations

import atexit
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from prompt_worker_client._core import Core, Options
from prompt_worker_client._throttle import logger
from prompt_worker_client.batching import Batch
from prompt_worker_client.config import ServedPrompt
from prompt_worker_client.protocol import CONFIG_PATH, CONVERSATIONS_PATH
from prompt_worker_client.stats import Stats


class Client:
    """The prompt-worker client for threaded code.

    `base_url` is the service (e.g. http://prompt-worker:8081) and `token` its INGEST_TOKEN.
    `fallback` maps prompt names to texts served while no configuration is loaded (a cold
    start with the service unreachable) or the configuration lacks the prompt.

    The configuration is fetched at once (the constructor waits up to `init_timeout`
    seconds for that first answer; 0 does not wait) and again every `refresh_interval`
    seconds with If-None-Match, so an unchanged configuration costs a 304. Conversations
    are sent in batches of `batch_size`, or when the oldest has waited `flush_interval`
    seconds; at most `max_buffered` wait in memory, and past that the oldest are dropped.
    A request gives up after `request_timeout` seconds; a failed batch is retried after
    Retry-After, or a backoff growing to `max_backoff` seconds. close(), and interpreter
    exit, wait up to `close_timeout` seconds for the buffer to be delivered.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        fallback: Mapping[str, str] | None = None,
        refresh_interval: float = 10.0,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        max_buffered: int = 10_000,
        request_timeout: float = 10.0,
        init_timeout: float = 5.0,
        close_timeout: float = 5.0,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = Options(
            base_url.rstrip("/"),
            token,
            dict(fallback or {}),
            refresh_interval,
            batch_size,
            flush_interval,
            max_buffered,
            request_timeout,
            init_timeout,
            close_timeout,
            max_backoff,
        )
        self._core = Core(options)
        self._http = httpx.Client(
            base_url=options.base_url,
            headers=options.headers,
            timeout=request_timeout,
            transport=transport,
        )
        self._cond = threading.Condition(self._core.lock)
        self._stop = threading.Event()
        self._first_answer = threading.Event()
        self._closed = False
        self._threads = [
            threading.Thread(target=self._refresh_loop, name="prompt-worker-config", daemon=True),
            threading.Thread(target=self._send_loop, name="prompt-worker-log", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        # Daemon threads are still running while atexit handlers run, so the last batches
        # can be delivered at interpreter exit.
        atexit.register(self.close)
        if init_timeout > 0:
            self._first_answer.wait(init_timeout)

    def __repr__(self) -> str:
        return f"Client({self._core.options.base_url!r})"

    # --- the application's side ------------------------------------------------------

    def get_prompt(self, name: str, unit_id: str) -> ServedPrompt:
        """The prompt version this unit gets, evaluated from the cached configuration exactly
        as the service's resolve would (no I/O). Serves the fallback for `name` when the
        configuration cannot answer. Raises PromptNotFound only when there is no fallback
        either, and InvalidUnitId for a unit id the service would refuse."""
        return self._core.get_prompt(name, unit_id)

    def log(self, conversation: Mapping[str, Any]) -> None:
        """Buffer one conversation (a dict of POST /v1/conversations' fields: prompt,
        version, unit_id, experiment_id, the metrics...) to be sent in the background.
        Never blocks on the network and never raises for an outage; a record that cannot
        be sent is dropped and counted (stats.dropped_invalid)."""
        if self._core.log(conversation):
            with self._cond:
                self._cond.notify_all()

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        return self._core.stats()

    @property
    def ready(self) -> bool:
        """Whether a configuration has been loaded (else get_prompt serves fallbacks)."""
        return self._core.config is not None

    def refresh(self) -> bool:
        """Fetch the configuration now (in this thread); answers whether the service
        answered with a usable one (200 or 304). Never raises for an outage."""
        before = self._core.stats()
        self._refresh_once()
        after = self._core.stats()
        return after.config_loads + after.config_not_modified > (
            before.config_loads + before.config_not_modified
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far now and wait until the service stored it (or
        refused it); answers False when `timeout` (default close_timeout) ran out first."""
        limit = self._core.options.close_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        with self._cond:
            upto = self._core.buffer.request_flush()
            self._cond.notify_all()
            while not self._core.buffer.settled(upto):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._threads[1].is_alive():
                    return False
                self._cond.wait(remaining)
        return True

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to `timeout`, default close_timeout), then stop the threads. What is
        still undelivered then is dropped and counted (stats.dropped_at_close). Later
        log() calls are dropped; get_prompt keeps serving the last configuration."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._core.closed = True
        atexit.unregister(self.close)
        self.flush(timeout)
        self._stop.set()
        self._core.abandon()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            # Bounded: a thread inside a request ends when the client below is closed.
            thread.join(timeout=1.0)
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- the threads -----------------------------------------------------------------

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            delay = self._refresh_once()
            self._first_answer.set()
            self._stop.wait(self._core.refresh_delay(delay))

    def _refresh_once(self) -> float:
        try:
            answer = self._http.get(CONFIG_PATH, headers=self._core.config_headers())
        except httpx.HTTPError as exc:
            return self._core.config_unreachable(exc)
        except Exception:  # a bug must not end the thread: the configuration would freeze
            logger.exception("prompt-worker configuration refresh failed unexpectedly")
            return self._core.options.refresh_interval
        return self._core.config_answered(answer.status_code, answer.headers, answer.content)

    def _send_loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._send(batch)
            with self._cond:
                self._cond.notify_all()  # flush() waits for this

    def _next_batch(self) -> Batch | None:
        with self._cond:
            while not self._stop.is_set():
                batch, wait = self._core.take_batch()
                if batch is not None:
                    return batch
                self._cond.wait(wait)
        return None

    def _send(self, batch: Batch) -> None:
        try:
            answer = self._http.post(
                CONVERSATIONS_PATH, content=batch.body, headers=self._core.send_headers(batch)
            )
        except httpx.HTTPError as exc:
            self._core.batch_unsent(batch, exc)
            return
        except Exception as exc:  # a bug, or the client closed under a request by close()
            if not self._stop.is_set():
                logger.exception("prompt-worker batch failed unexpectedly; retrying")
            self._core.batch_unsent(batch, exc)
            return
        self._core.batch_answered(batch, answer.status_code, answer.headers, answer.content)
