"""Running out of file descriptors: said in the log once per interval, not thousands of times.

Out of file descriptors (EMFILE/ENFILE) or memory, asyncio's accept loop reports
"socket.accept() out of system resource" through the loop's exception handler, and on
CPython 3.11 it does so up to `backlog` times per retry, each retry scheduling more: 49,649
lines in 4 s were seen under `ulimit -n 256`. The cure for the cause is closing idle
connections (HTTP_KEEPALIVE_TIMEOUT_SECONDS); the exception handler here keeps the log
readable meanwhile. Everything else goes on to the handler that was there before (or
asyncio's default).

uvloop (the service's loop where installed) reports nothing: libuv accepts and closes the
waiting connections to drain its backlog. So `watch_open_files` also counts the process's
open descriptors every second and says so, throttled alike, once they pass 90% of the limit.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from optimizer.log_throttle import LOG_INTERVAL_SECONDS, ThrottledLog

log = logging.getLogger("prompt_worker.http")

_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
_ACCEPT_MESSAGE = "socket.accept() out of system resource"
# The retries asyncio schedules after such an error fail once more if they fire after the
# listening socket was closed (at shutdown): they are part of the same storm.
_ACCEPT_RETRY = "_start_serving"

ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def is_accept_error(context: dict[str, Any]) -> bool:
    message = str(context.get("message", ""))
    if message.startswith(_ACCEPT_MESSAGE) or (
        message.startswith("Exception in callback") and _ACCEPT_RETRY in message
    ):
        return True
    exc = context.get("exception")
    return isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS


class AcceptErrorThrottle:
    """Loop exception handler: accept errors are logged through a ThrottledLog."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        fallback: ExceptionHandler | None,
        interval: float = LOG_INTERVAL_SECONDS,
    ) -> None:
        self._fallback = fallback
        self._log = ThrottledLog(
            log,
            logging.ERROR,
            "cannot accept connections: out of file descriptors or memory",
            interval,
            loop,
        )

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if not is_accept_error(context):
            if self._fallback is not None:
                self._fallback(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        exc = context.get("exception")
        self._log.note(
            error=str(exc) if exc is not None else str(context.get("message")),
            hint="idle connections are closed after HTTP_KEEPALIVE_TIMEOUT_SECONDS; raise "
            "the open-files limit (ulimit -n) if this persists",
        )


@contextmanager
def accept_errors_throttled(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Install the throttle on `loop` for the duration, then restore the previous handler."""
    previous = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrorThrottle(loop, previous))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)


OPEN_FILES_SHARE = 0.9
OPEN_FILES_CHECK_SECONDS = 1.0


def open_files() -> tuple[int, int] | None:
    """(descriptors open, the soft limit) for this process; None without /proc/self/fd."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir("/proc/self/fd"))
    except OSError as exc:
        if exc.errno in _RESOURCE_ERRNOS:  # reading the list needs a descriptor too
            return soft, soft
        return None
    return used, soft


async def watch_open_files(interval: float = OPEN_FILES_CHECK_SECONDS) -> None:
    """Until cancelled: a throttled warning whenever the open descriptors pass
    OPEN_FILES_SHARE of the limit."""
    warning = ThrottledLog(
        log,
        logging.WARNING,
        "nearly out of file descriptors: new connections may be refused",
        LOG_INTERVAL_SECONDS,
        asyncio.get_running_loop(),
    )
    while True:
        counts = open_files()
        if counts is None:
            return
        used, limit = counts
        if limit != resource.RLIM_INFINITY and used >= OPEN_FILES_SHARE * limit:
            warning.note(
                open=used,
                limit=limit,
                hint="idle connections are closed after HTTP_KEEPALIVE_TIMEOUT_SECONDS; raise "
                "the open-files limit (ulimit -n) if this persists",
            )
        await asyncio.sleep(interval)
