"""Client: the SDK for threaded applications (Flask, Django, plain scripts).

Two daemon threads do the I/O: one refreshes the configuration, one sends batches. The
application's threads only touch memory: get_prompt evaluates the cached configuration,
log appends to the buffer.

The threads belong to a _Worker, which never references its Client: a Client the
application drops is garbage collected, and its finalizer closes the worker (delivering what
was buffered). One exit hook flushes every worker still open, under one deadline.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
import weakref
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import httpx

from prompt_worker_client._core import MAX_BUFFERED_BYTES, Core, Options
from prompt_worker_client._throttle import logger
from prompt_worker_client.batching import Batch
from prompt_worker_client.config import ServedPrompt
from prompt_worker_client.protocol import CONFIG_PATH, CONVERSATIONS_PATH
from prompt_worker_client.stats import Stats

JOIN_TIMEOUT = 1.0  # seconds close() waits for a thread (one inside a request ends with http)


class Client:
    """The prompt-worker client for threaded code.

    `base_url` is the service (e.g. http://prompt-worker:8081) and `token` its INGEST_TOKEN.
    `fallback` maps prompt names to texts served while no configuration is loaded (a cold
    start with the service unreachable) or the configuration lacks the prompt.

    The configuration is fetched at once (the constructor waits up to `init_timeout`
    seconds for that first answer; 0 does not wait) and again every `refresh_interval`
    seconds (spread by +-10%) with If-None-Match, so an unchanged configuration costs a 304.
    Conversations are sent in batches of `batch_size`, or when the oldest has waited
    `flush_interval` seconds; at most `max_buffered` conversations and `max_buffered_bytes`
    bytes of their JSON wait in memory, and past either the oldest are dropped. A request
    gives up after `request_timeout` seconds; a failed batch is retried after Retry-After, or
    a backoff growing to `max_backoff` seconds. close() waits up to `close_timeout` seconds
    for the buffer to be delivered; interpreter exit waits that long once for all clients.
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
        max_buffered_bytes: int = MAX_BUFFERED_BYTES,
        request_timeout: float = 10.0,
        init_timeout: float = 5.0,
        close_timeout: float = 5.0,
        max_backoff: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        options = Options(
            base_url=base_url.rstrip("/"),
            token=token,
            fallback=dict(fallback or {}),
            refresh_interval=refresh_interval,
            batch_size=batch_size,
            flush_interval=flush_interval,
            max_buffered=max_buffered,
            max_buffered_bytes=max_buffered_bytes,
            request_timeout=request_timeout,
            init_timeout=init_timeout,
            close_timeout=close_timeout,
            max_backoff=max_backoff,
        )
        self._core = Core(options)
        http = httpx.Client(
            base_url=options.base_url,
            headers=options.headers,
            timeout=request_timeout,
            transport=transport,
        )
        self._worker = _Worker(self._core, http)
        self._threads = self._worker.threads
        # Not at exit (atexit=False): the module's exit hook flushes every open worker.
        self._finalizer = weakref.finalize(self, self._worker.close_in_background)
        self._finalizer.atexit = False
        self._worker.start()
        if init_timeout > 0:
            self._worker.first_answer.wait(init_timeout)

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
        version, unit_id, experiment_id, the metrics, transcript, `messages` as a list of
        Message...) to be sent in the background.
        Never blocks on the network and never raises for an outage; a record that cannot
        be sent is dropped and counted (stats.dropped_invalid)."""
        if self._core.log(conversation):
            with self._worker.cond:
                self._worker.cond.notify_all()

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
        self._worker.refresh_once()
        after = self._core.stats()
        return after.config_loads + after.config_not_modified > (
            before.config_loads + before.config_not_modified
        )

    def flush(self, timeout: float | None = None) -> bool:
        """Send everything logged so far now and wait until the service stored it (or
        refused it); answers False when `timeout` (default close_timeout) ran out first."""
        deadline = time.monotonic() + self._timeout(timeout)
        return self._worker.wait_settled(self._worker.request_flush(), deadline)

    def close(self, timeout: float | None = None) -> None:
        """Flush (up to `timeout`, default close_timeout), then stop the threads. What is
        still undelivered then is dropped and counted (stats.dropped_at_close). Later
        log() calls are dropped; get_prompt keeps serving the last configuration."""
        if self._worker.closing:
            return
        self._finalizer.detach()
        self._worker.close(self._timeout(timeout))

    def _timeout(self, timeout: float | None) -> float:
        return self._core.options.close_timeout if timeout is None else timeout

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class _Worker:
    """One Client's I/O: its HTTP client and its two daemon threads, which reference this
    object and never the Client."""

    def __init__(self, core: Core, http: httpx.Client) -> None:
        self.core = core
        self.http = http
        self.cond = threading.Condition(core.lock)
        self.stop = threading.Event()
        self.first_answer = threading.Event()
        self.closing = False
        self.threads = [
            threading.Thread(target=self._refresh_loop, name="prompt-worker-config", daemon=True),
            threading.Thread(target=self._send_loop, name="prompt-worker-log", daemon=True),
        ]

    def start(self) -> None:
        with _open_lock:
            _open.add(self)
        for thread in self.threads:
            thread.start()

    # --- flush and close -------------------------------------------------------------

    def request_flush(self) -> int:
        """Make everything buffered due now; answers what wait_settled waits for."""
        with self.cond:
            upto = self.core.buffer.request_flush()
            self.cond.notify_all()
            return upto

    def wait_settled(self, upto: int, deadline: float) -> bool:
        with self.cond:
            while not self.core.buffer.settled(upto):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.threads[1].is_alive():
                    return False
                self.cond.wait(remaining)
        return True

    def begin_close(self) -> int:
        """Drop later log() calls and make everything buffered due; answers what
        finish_close waits for."""
        with self.cond:
            self.closing = True
            self.core.closed = True
        return self.request_flush()

    def finish_close(self, upto: int, deadline: float) -> None:
        """Wait until `upto` is delivered or `deadline`, then drop the rest (counted) and stop.
        Safe to run twice at once (a collected client's closer and the exit hook)."""
        self.wait_settled(upto, deadline)
        self.stop.set()
        self.core.abandon()
        with self.cond:
            self.cond.notify_all()
        for thread in self.threads:
            thread.join(timeout=JOIN_TIMEOUT)
        self.http.close()
        with _open_lock:
            _open.discard(self)

    def close(self, timeout: float) -> None:
        self.finish_close(self.begin_close(), time.monotonic() + timeout)

    def close_in_background(self) -> None:
        """The Client was garbage collected unclosed: deliver what it buffered from a thread
        of its own, since a finalizer runs in whichever thread collected it (perhaps one of
        ours, or a request handler that must not wait close_timeout)."""
        if self.closing:
            return
        closer = threading.Thread(
            target=self.close,
            args=(self.core.options.close_timeout,),
            name="prompt-worker-close",
            daemon=True,
        )
        # RuntimeError: the interpreter is exiting, and the exit hook flushes this worker.
        with contextlib.suppress(RuntimeError):
            closer.start()

    # --- the threads -----------------------------------------------------------------

    def _refresh_loop(self) -> None:
        while not self.stop.is_set():
            delay = self.refresh_once()
            self.first_answer.set()
            self.stop.wait(self.core.refresh_delay(delay))

    def refresh_once(self) -> float:
        try:
            answer = self.http.get(CONFIG_PATH, headers=self.core.config_headers())
        except httpx.HTTPError as exc:
            return self.core.config_unreachable(exc)
        except Exception:  # a bug must not end the thread: the configuration would freeze
            logger.exception("prompt-worker configuration refresh failed unexpectedly")
            return self.core.options.refresh_interval
        return self.core.config_answered(answer.status_code, answer.headers, answer.content)

    def _send_loop(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._send(batch)
            with self.cond:
                self.cond.notify_all()  # flush() waits for this

    def _next_batch(self) -> Batch | None:
        with self.cond:
            while not self.stop.is_set():
                batch, wait = self.core.take_batch()
                if batch is not None:
                    return batch
                self.cond.wait(wait)
        return None

    def _send(self, batch: Batch) -> None:
        try:
            answer = self.http.post(
                CONVERSATIONS_PATH, content=batch.body, headers=self.core.send_headers(batch)
            )
        except httpx.HTTPError as exc:
            self.core.batch_unsent(batch, exc)
            return
        except Exception as exc:  # a bug, or the client closed under a request by close()
            if not self.stop.is_set():
                logger.exception("prompt-worker batch failed unexpectedly; retrying")
            self.core.batch_unsent(batch, exc)
            return
        self.core.batch_answered(batch, answer.status_code, answer.headers, answer.content)


# Workers not closed yet. Strong references are harmless here: a worker is kept alive by its
# threads anyway, and leaves this set when it closes (its Client's finalizer closes it).
_open: set[_Worker] = set()
_open_lock = threading.Lock()


def _flush_all_at_exit() -> None:
    """Deliver what every open client buffered, waiting at most the longest close_timeout in
    all (not each in turn). Daemon threads still run while atexit handlers do."""
    with _open_lock:
        workers = list(_open)
    if not workers:
        return
    deadline = time.monotonic() + max(w.core.options.close_timeout for w in workers)
    marks = [(worker, worker.begin_close()) for worker in workers]  # all send at once
    for worker, upto in marks:
        worker.finish_close(upto, deadline)


atexit.register(_flush_all_at_exit)
