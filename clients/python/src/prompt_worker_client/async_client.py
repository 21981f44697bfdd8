"""AsyncClient: the SDK for asyncio applications (aiohttp, FastAPI, Starlette).

Two tasks on the application's event loop do the I/O; get_prompt and log are plain
(non-async) calls that only touch memory. There is no exit hook: an event loop is gone by
the time the interpreter exits, so the application awaits close() (or uses `async with`)
in its shutdown path.

The tasks, the events that wake them and the HTTP client (whose connections are a loop's)
belong to one loop: _LoopTasks. When that loop ends (asyncio.run returns, a test framework
closes it) the next call made on a running loop starts new ones there; the buffer, the
configuration and the counters live on in Core, so nothing logged is lost meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx

from prompt_worker_client._core import MAX_BUFFERED_BYTES, Core, Options
from prompt_worker_client._throttle import logger
from prompt_worker_client.batching import Batch
from prompt_worker_client.config import ServedPrompt
from prompt_worker_client.protocol import CONFIG_PATH, CONVERSATIONS_PATH
from prompt_worker_client.stats import Stats


@dataclass(eq=False)
class _LoopTasks:
    """The client's two tasks on one event loop, and what belongs to that loop with them."""

    loop: asyncio.AbstractEventLoop
    thread: int  # the loop's thread
    http: httpx.AsyncClient
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)
    first_answer: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: tuple[asyncio.Task[None], ...] = ()

    def alive(self) -> bool:
        """Whether the tasks can still do their work: their loop runs (a closed one does
        not) and they have not been cancelled (asyncio.run cancels every task at its end)."""
        return self.loop.is_running() and not any(task.done() for task in self.tasks)

    def wake_up(self) -> None:
        """Wake the sender, from any thread; nothing to wake once the loop is closed."""
        try:
            if threading.get_ident() == self.thread:
                self.wake.set()
            else:
                self.loop.call_soon_threadsafe(self.wake.set)
        except RuntimeError:  # "Event loop is closed": the next call on a loop restarts them
            pass

    def cancel(self) -> None:
        """Cancel the tasks from another loop; a no-op once their loop is closed."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._cancel)

    def _cancel(self) -> None:
        for task in self.tasks:
            task.cancel()

    async def stop(self) -> None:
        """Cancel the tasks and wait for them to end; on their loop."""
        self._cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


class AsyncClient:
    """The prompt-worker client for asyncio code; the same settings as Client.

    Start it with `async with AsyncClient(...) as client` or `await client.start()` (which
    waits up to `init_timeout` seconds for the first configuration); a client used before
    that starts its tasks on the running loop by itself, without waiting. Stop it with
    `await client.close()` to deliver what is buffered. A client outlives its event loop:
    used on a new loop after the first one closed, it starts its tasks again there.
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
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._core = Core(
            Options(
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
        )
        self._transport = transport
        self._on_loop: _LoopTasks | None = None
        self._start_lock = threading.Lock()  # loops in two threads may both start tasks
        self._closing = False
        self._closed = False

    def __repr__(self) -> str:
        return f"AsyncClient({self._core.options.base_url!r})"

    # --- the application's side ------------------------------------------------------

    async def start(self) -> None:
        """Start the background tasks and wait up to init_timeout for the configuration."""
        tasks = await self._tasks_here()
        if tasks is None or self._core.options.init_timeout <= 0:
            return
        try:
            async with asyncio.timeout(self._core.options.init_timeout):
                await tasks.first_answer.wait()
        except TimeoutError:
            pass

    def get_prompt(self, name: str, unit_id: str) -> ServedPrompt:
        """As Client.get_prompt: evaluated from the cached configuration, no I/O."""
        self._attach()
        return self._core.get_prompt(name, unit_id)

    def log(self, conversation: Mapping[str, Any]) -> None:
        """As Client.log. Safe to call from other threads too (e.g. run_in_executor), and
        with no loop running: then it buffers, and the next call on a loop sends."""
        tasks = self._attach()
        if self._core.log(conversation) and tasks is not None:
            tasks.wake_up()

    @property
    def stats(self) -> Stats:
        return self._core.stats()

    @property
    def ready(self) -> bool:
        return self._core.config is not None

    async def refresh(self) -> bool:
        """Fetch the configuration now; answers whether a usable one came (200 or 304)."""
        tasks = await self._tasks_here()
        if tasks is None:
            return False
        before = self._core.stats()
        await self._refresh_once(tasks.http)
        after = self._core.stats()
        return after.config_loads + after.config_not_modified > (
            before.config_loads + before.config_not_modified
        )

    async def flush(self, timeout: float | None = None) -> bool:
        """As Client.flush."""
        tasks = await self._tasks_here()
        limit = self._core.options.close_timeout if timeout is None else timeout
        with self._core.lock:
            upto = self._core.buffer.request_flush()
        if tasks is None:
            return self._settled(upto)
        tasks.wake.set()
        try:
            async with asyncio.timeout(limit), tasks.progress:
                await tasks.progress.wait_for(lambda: self._settled(upto))
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float | None = None) -> None:
        """As Client.close: flush, then stop the tasks and drop (counted) what is left."""
        if self._closing:
            return
        self._closing = True
        self._core.closed = True
        if self._on_loop is not None or not self._settled(self._core.buffer.last_seq):
            await self.flush(timeout)
        with self._start_lock:
            self._closed = True
        self._core.abandon()
        tasks = self._on_loop
        if tasks is None:
            return
        if tasks.loop is asyncio.get_running_loop():
            await tasks.stop()
        else:  # a loop that is closed, stopped, or did not let go of them in time
            tasks.cancel()

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

    def _attach(self) -> _LoopTasks | None:
        """The tasks, started on the running loop if theirs is gone. With no loop running
        here it answers the current ones, perhaps stopped: log() buffers meanwhile."""
        tasks = self._on_loop
        if tasks is not None and tasks.alive():
            return tasks
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return tasks
        # Not again on the loop that cancelled them: that is asyncio.run shutting down, and
        # tasks started now would be left pending on a closed loop.
        return self._start(loop, restart_on_same_loop=False)

    async def _tasks_here(self) -> _LoopTasks | None:
        """The tasks, running on this loop (their events and HTTP client belong to it):
        started here if there are none or theirs is gone, moved here from a loop still
        running in another thread. None once closed, or if that loop did not let go of them
        within request_timeout."""
        loop = asyncio.get_running_loop()
        current = self._on_loop
        if current is not None and current.loop is not loop and current.alive():
            stopping = current.stop()
            try:
                moved = asyncio.run_coroutine_threadsafe(stopping, current.loop)
            except RuntimeError:  # that loop closed meanwhile
                stopping.close()
            else:
                await asyncio.wait(
                    [asyncio.wrap_future(moved)], timeout=self._core.options.request_timeout
                )
        tasks = self._start(loop, restart_on_same_loop=True)
        if tasks is None or tasks.loop is not loop or self._closed:
            return None
        return tasks

    def _start(
        self, loop: asyncio.AbstractEventLoop, *, restart_on_same_loop: bool
    ) -> _LoopTasks | None:
        with self._start_lock:
            old = self._on_loop
            if self._closed or (
                old is not None and (old.alive() or (old.loop is loop and not restart_on_same_loop))
            ):
                return old
            new = _LoopTasks(loop, threading.get_ident(), self._new_http())
            new.tasks = (
                loop.create_task(self._refresh_loop(new), name="prompt-worker-config"),
                loop.create_task(self._send_loop(new), name="prompt-worker-log"),
            )
            self._on_loop = new
        if old is not None and old.loop is not loop:
            old.cancel()  # a stopped loop may run again: its tasks must not send as well
        return new

    def _new_http(self) -> httpx.AsyncClient:
        options = self._core.options
        return httpx.AsyncClient(
            base_url=options.base_url,
            headers=options.headers,
            timeout=options.request_timeout,
            transport=self._transport,
        )

    def _settled(self, upto: int) -> bool:
        with self._core.lock:
            return self._core.buffer.settled(upto)

    async def _refresh_loop(self, tasks: _LoopTasks) -> None:
        try:
            while True:
                delay = await self._refresh_once(tasks.http)
                tasks.first_answer.set()
                await asyncio.sleep(self._core.refresh_delay(delay))
        finally:
            # Cancelled by close() or by the loop ending: the connections are this loop's. A
            # transport the application passed serves the next loop too, until close().
            if self._transport is None or self._closed:
                await tasks.http.aclose()

    async def _refresh_once(self, http: httpx.AsyncClient) -> float:
        try:
            answer = await http.get(CONFIG_PATH, headers=self._core.config_headers())
        except httpx.HTTPError as exc:
            return self._core.config_unreachable(exc)
        except Exception:  # a bug must not end the task: the configuration would freeze
            logger.exception("prompt-worker configuration refresh failed unexpectedly")
            return self._core.options.refresh_interval
        return self._core.config_answered(answer.status_code, answer.headers, answer.content)

    async def _send_loop(self, tasks: _LoopTasks) -> None:
        while True:
            batch, wait = self._core.take_batch()
            if batch is None:
                tasks.wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await tasks.wake.wait()
                except TimeoutError:
                    pass
                continue
            await self._send(tasks.http, batch)
            async with tasks.progress:
                tasks.progress.notify_all()

    async def _send(self, http: httpx.AsyncClient, batch: Batch) -> None:
        try:
            answer = await http.post(
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
