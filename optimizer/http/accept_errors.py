"""An event-loop exception handler that turns accept-error storms into one line per interval.

Out of file descriptors (EMFILE/ENFILE) or memory, asyncio's accept loop reports
"socket.accept() out of system resource" through the loop's exception handler, and on
CPython 3.11 it does so up to `backlog` times per retry, each retry scheduling more: 49,649
lines in 4 s were seen under `ulimit -n 256`. The cure for the cause is closing idle
connections (HTTP_KEEPALIVE_TIMEOUT_SECONDS); this keeps the log readable meanwhile.
Everything else goes on to the handler that was there before (or asyncio's default).
"""

from __future__ import annotations

import asyncio
import errno
import logging
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
