"""AsyncClient: the SDK for asyncio applications (aiohttp, FastAPI, Starlette).

Two tasks on the application's event loop do the I/O; get_prompt and log are plain
(non-async) calls that only touch memory. There is no exit hook: an event loop is gone by
the time the interpreter exits, so the application awaits close() (or uses `async with`)
in its shutdown path.
"""

from __future__ import annotations

import asyncio
import threading
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


class AsyncClient:
    """The prompt-worker client for asyncio code; the same settings as Client.

    Start it with `async with AsyncClient(...) as client` or `await client.start()` (which
    waits up to `init_timeout` seconds for the first configuration); a client used before
    that starts its tasks on the running loop by itself, without waiting. Stop it with
    `await client.close()` to deliver what is buffered.
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
        transport: httpx.AsyncBaseTransport | None = None,
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
        self._http = httpx.AsyncClient(
            base_url=options.base_url,
            headers=options.headers,
            timeout=request_timeout,
            transport=transport,
        )
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._first_answer = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self._core.options.base_url!r})"

    # --- the application's side ------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks and wait up to init_timeout for the configuration."""
        self._ensure_started()
        if self._core.options.init_timeout > 0:
            try:
                async with asyncio.timeout(self._core.options.init_timeout):
                    await self._first_answer.wait()
            except TimeoutError:
                pass

    def get_prompt(self, name: str, unit_id: str) -> ServedPrompt:
        """As Client.get_prompt: evaluated from the cached configuration, no I/O."""
        if not self._tasks:
            self._ensure_started()
        return self._core.get_prompt(name, unit_id)

    def log(self, conversation: Mapping[str, Any]) -> None:
        """As Client.log. Safe to call from other threads too (e.g. run_in_executor)."""
        if not self._tasks:
            self._ensure_started()
        if self._core.log(conversation) and self._loop is not None:
            if threading.get_ident() == self._loop_thread:
                self._wake.set()
            else:
                self._loop.call_soon_threadsafe(self._wake.set)

    @property
    def stats(self) -> Stats:
        return self._core.stats()

    @property
    def ready(self) -> bool:
        return self._core.config is not None

    async def refresh(self) -> bool:
        """Fetch the configuration now; answers whether a usable one came (200 or 304)."""
        before = self._core.stats()
        await self._refresh_once()
        after = self._core.stats()
        return after.config_loads + after.config_not_modified > (
            before.config_loads + before.config_not_modified
        )

    async def flush(self, timeout: float | None = None) -> bool:
        """As Client.flush."""
        self._ensure_started()
        limit = self._core.options.close_timeout if timeout is None else timeout
        with self._core.lock:
            upto = self._core.buffer.request_flush()
        self._wake.set()
        try:
            async with asyncio.timeout(limit), self._progress:
                await self._progress.wait_for(lambda: self._settled(upto))
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float | None = None) -> None:
        """As Client.close: flush, then stop the tasks and drop (counted) what is left."""
        if self._closed:
            return
        self._closed = True
        self._core.closed = True
        if self._tasks:
            await self.flush(timeout)
        self._core.abandon()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the tasks -------------------------------------------------------------------

    def _ensure_started(self) -> None:
        if self._tasks or self._closed:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # called outside the loop: the first call on it starts the tasks
        self._loop_thread = threading.get_ident()
        self._tasks = [
            self._loop.create_task(self._refresh_loop(), name="prompt-worker-config"),
            self._loop.create_task(self._send_loop(), name="prompt-worker-log"),
        ]

    def _settled(self, upto: int) -> bool:
        with self._core.lock:
            return self._core.buffer.settled(upto)

    async def _refresh_loop(self) -> None:
        while True:
            delay = await self._refresh_once()
            self._first_answer.set()
            await asyncio.sleep(self._core.refresh_delay(delay))

    async def _refresh_once(self) -> float:
        try:
            answer = await self._http.get(CONFIG_PATH, headers=self._core.config_headers())
        except httpx.HTTPError as exc:
            return self._core.config_unreachable(exc)
        except Exception:  # a bug must not end the task: the configuration would freeze
            logger.exception("prompt-worker configuration refresh failed unexpectedly")
            return self._core.options.refresh_interval
        return self._core.config_answered(answer.status_code, answer.headers, answer.content)

    async def _send_loop(self) -> None:
        while True:
            batch, wait = self._core.take_batch()
            if batch is None:
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            await self._send(batch)
            async with self._progress:
                self._progress.notify_all()

    async def _send(self, batch: Batch) -> None:
        try:
            answer = await self._http.post(
                CONVERSATIONS_PATH, content=batch.body, headers=self._core.send_headers(batch)
            )
        except httpx.HTTPError as exc:
            self._core.batch_unsent(batch, exc)
            return
        except Exception as exc:  # a bug: logged, and the batch retried like a network error
            logger.exception("prompt-worker batch failed unexpectedly; retrying")
            self._core.batch_unsent(batch, exc)
            return
        self._core.batch_answered(batch, answer.status_code, answer.headers, answer.content)
