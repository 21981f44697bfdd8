"""How the HTTP server treats connections: slow or idle clients, malformed requests, hang-ups.

aiohttp closes an idle keep-alive connection (and one that never completes its request
headers) after `keepalive_timeout`, which we set from HTTP_KEEPALIVE_TIMEOUT_SECONDS
instead of its default of about an hour. What it lacks, added here:

- a deadline for each request, from its first byte until its headers and body are all in
  (HTTP_REQUEST_TIMEOUT_SECONDS); a client that trickles bytes is cut off. A request only
  notes when it started (a timer per request costs more than the rest of a resolve's own
  work); the server sweeps its connections every quarter of the timeout (at most every
  SWEEP_SECONDS), so a late client is cut off within that much after its deadline;
- JSON answers for requests that cannot be parsed (aiohttp's plain-text 400 echoes the
  start of the offending line, a bearer token included);
- a middleware that treats "the client is gone" as what it is, not as a server error.

aiohttp has no public hook for the protocol class, so a runner builds a server that builds
our RequestHandler subclass; tests/integration/test_http_connections.py pins the behaviour.
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.http import HttpProcessingError
from aiohttp.http_exceptions import (
    BadHttpMethod,
    BadStatusLine,
    InvalidHeader,
    InvalidURLError,
    LineTooLong,
    PayloadEncodingError,
)
from aiohttp.streams import StreamReader
from aiohttp.typedefs import Handler
from aiohttp.web_protocol import RequestHandler, RequestPayloadError

from optimizer.http.errors import json_error
from optimizer.log_throttle import LOG_INTERVAL_SECONDS, ThrottledLog

log = logging.getLogger("prompt_worker.http")

INTERNAL_ERROR_MESSAGE = "internal error; it has been logged"
SWEEP_SECONDS = 1.0
# Most specific first. Never the parser's own message: it quotes the bytes it choked on.
_PARSE_PROBLEMS: tuple[tuple[type[HttpProcessingError], str], ...] = (
    (BadHttpMethod, "invalid method, or not HTTP at all (HTTPS sent to this HTTP port?)"),
    (BadStatusLine, "invalid request line"),
    (InvalidURLError, "invalid URL"),
    (InvalidHeader, "invalid header"),
    (PayloadEncodingError, "body does not match its Content-Length or Transfer-Encoding"),
)


def parse_error_answer(exc: HttpProcessingError, max_field_size: int) -> tuple[int, str]:
    """Status and message for a request aiohttp could not parse, naming the problem
    without quoting any part of the request."""
    if isinstance(exc, LineTooLong):
        return (
            int(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE),
            f"the request line or a header is longer than {max_field_size} bytes; send it shorter",
        )
    for kind, problem in _PARSE_PROBLEMS:
        if isinstance(exc, kind):
            return int(HTTPStatus.BAD_REQUEST), f"malformed HTTP request: {problem}"
    return int(HTTPStatus.BAD_REQUEST), "malformed HTTP request: it could not be parsed"


class ConnectionLogs:
    """The throttled lines one server writes about its clients' faults."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.malformed = ThrottledLog(
            log, logging.INFO, "rejected a malformed HTTP request", LOG_INTERVAL_SECONDS, loop
        )
        self.too_slow = ThrottledLog(
            log,
            logging.INFO,
            "closed a connection whose request did not arrive in time",
            LOG_INTERVAL_SECONDS,
            loop,
        )


class GuardedRequestHandler(RequestHandler):
    """aiohttp's protocol with a per-request deadline and JSON answers to parse errors."""

    def __init__(
        self,
        manager: web.Server,
        *,
        loop: asyncio.AbstractEventLoop,
        request_timeout: float,
        logs: ConnectionLogs,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, loop=loop, **kwargs)
        self._request_timeout = request_timeout
        self._logs = logs
        self._receiving_since: float | None = None  # loop time of the request's first byte
        self._incoming: StreamReader | None = None  # the body being received

    def data_received(self, data: bytes) -> None:
        # The first byte of a request starts its clock; the end of its body stops it.
        if data and self._receiving_since is None:
            self._receiving_since = self._loop.time()
        queued = len(self._messages)
        super().data_received(data)
        if len(self._messages) > queued:
            # Earlier new messages are complete: the parser only moves on after a body.
            _, self._incoming = self._messages[-1]
            if self._receiving_since is None and not self._incoming.is_eof():
                # Pipelined requests held back in the parser are parsed later, from no new
                # bytes (data_received(b"")): the clock must start for their body too.
                self._receiving_since = self._loop.time()
            self._incoming.on_eof(self._request_received)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._request_received()
        super().connection_lost(exc)

    def _request_received(self) -> None:
        self._incoming = None
        self._receiving_since = None

    def cut_off_if_late(self, now: float) -> None:
        since = self._receiving_since
        if since is not None and now - since >= self._request_timeout:
            self._too_slow()

    def _too_slow(self) -> None:
        self._receiving_since = None
        if self.transport is None:
            return
        peer = self.transport.get_extra_info("peername")
        self._logs.too_slow.note(
            timeout_seconds=self._request_timeout, peer=peer[0] if isinstance(peer, tuple) else peer
        )
        # The handler reading the body gets a reset connection, which client_gone_middleware
        # answers quietly. Set before closing: a read between the close and
        # connection_lost() would raise a bare RuntimeError instead.
        if self._incoming is not None:
            self._incoming.set_exception(ConnectionResetError("request not received in time"))
        self.force_close()

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        # After the answer is sent, aiohttp reads and drops the rest of the body; a body that
        # does not decode (a bad Content-Encoding) fails there. That is the client's fault:
        # one throttled line, no traceback.
        exc = kwargs.get("exc_info")
        if isinstance(exc, RequestPayloadError | HttpProcessingError):
            self._logs.malformed.note(
                status=int(HTTPStatus.BAD_REQUEST),
                problem="malformed HTTP request: body "
                "does not match its Content-Length, Transfer-Encoding or Content-Encoding",
            )
            return
        super().log_exception(*args, **kwargs)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            # Part of an answer is out already: the connection is beyond repair.
            raise ConnectionError("cannot send an error answer after a partial response")
        if isinstance(exc, HttpProcessingError):
            status, text = parse_error_answer(exc, self.max_field_size)
            self._logs.malformed.note(status=status, problem=text, peer=request.remote)
        else:
            # An exception that escaped the error middleware, or a handler timeout.
            self.log_exception("error handling a request", exc_info=exc)
            text = (
                INTERNAL_ERROR_MESSAGE
                if status == HTTPStatus.INTERNAL_SERVER_ERROR
                else HTTPStatus(status).phrase
            )
        response = json_error(status, text)
        response.force_close()
        return response


class GuardedServer(web.Server):
    """aiohttp's Server, building GuardedRequestHandler for each connection."""

    def __init__(
        self,
        handler: Any,
        *,
        request_factory: Any,
        loop: asyncio.AbstractEventLoop,
        request_timeout: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, request_factory=request_factory, loop=loop, **kwargs)
        self._protocol_loop = loop
        self._protocol_kwargs = kwargs  # what RequestHandler takes: keepalive_timeout, ...
        self._request_timeout = request_timeout
        self._logs = ConnectionLogs(loop)
        self._sweep_seconds = min(SWEEP_SECONDS, request_timeout / 4)
        self._sweeper = loop.call_later(self._sweep_seconds, self._sweep)

    def _sweep(self) -> None:
        loop = self._protocol_loop
        self._sweeper = loop.call_later(self._sweep_seconds, self._sweep)  # first: always next
        now = loop.time()
        for handler in list(self._connections):
            if isinstance(handler, GuardedRequestHandler):
                handler.cut_off_if_late(now)

    def pre_shutdown(self) -> None:
        self._sweeper.cancel()
        super().pre_shutdown()

    async def shutdown(self, timeout: float | None = None) -> None:
        self._sweeper.cancel()
        await super().shutdown(timeout)

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(
            self,
            loop=self._protocol_loop,
            request_timeout=self._request_timeout,
            logs=self._logs,
            **self._protocol_kwargs,
        )


class GuardedAppRunner(web.AppRunner):
    """AppRunner whose server closes idle connections and slow requests."""

    def __init__(
        self, app: web.Application, *, keepalive_timeout: float, request_timeout: float
    ) -> None:
        super().__init__(app, access_log=None)
        self._keepalive_timeout = keepalive_timeout
        self._request_timeout = request_timeout

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # runs the app's start-up hooks and freezes it
        return GuardedServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            loop=asyncio.get_running_loop(),
            access_log=None,
            keepalive_timeout=self._keepalive_timeout,
            request_timeout=self._request_timeout,
        )


@web.middleware
async def client_gone_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A client that hangs up (or is cut off for being too slow) while its body is read
    leaves the handler with a ConnectionResetError: nobody is left to answer, and it is no
    server error, so it must not be logged as one."""
    try:
        return await handler(request)
    except ConnectionResetError:
        if request.transport is not None and not request.transport.is_closing():
            raise
        return json_error(
            HTTPStatus.BAD_REQUEST, "connection closed before the request was received in full"
        )
