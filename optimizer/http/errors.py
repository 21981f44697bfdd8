"""Every error leaves the server as JSON {"error": message, "field": name-or-null}.

One middleware maps the project's exceptions, aiohttp's own HTTP errors (unknown route,
wrong method, body too large) and database outages to that shape, and turns anything
unexpected into a generic 500 that is logged with its traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import exc as sa_exc

from optimizer.errors import (
    Conflict,
    DatabaseUnavailable,
    InvalidInput,
    NotFound,
    PromptWorkerError,
)

log = logging.getLogger("prompt_worker.http")

DB_UNAVAILABLE_MESSAGE = "database unavailable, try again"
RETRY_AFTER_SECONDS = "5"
_KEPT_HEADERS = ("allow", "www-authenticate")


class ApiError(PromptWorkerError):
    """An HTTP answer decided by a handler: status, message, and the field at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = dict(headers or {})


def json_error(
    status: int, message: str, field: str | None = None, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response({"error": message, "field": field}, status=status, headers=headers)


def is_database_outage(exc: BaseException) -> bool:
    """Errors that mean "the database is not answering", as opposed to a bad statement."""
    if isinstance(
        exc,
        DatabaseUnavailable | sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError,
    ):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors, re-worded so the message tells the caller what to change."""
    if isinstance(exc, web.HTTPNotFound):
        message = f"no such route: {request.method} {request.path}"
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"method {request.method} is not allowed on {request.path}; use {allowed}"
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = (
            f"request body is larger than the limit of {request.client_max_size} "
            "bytes (MAX_BODY_BYTES)"
        )
    else:
        message = exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
    return json_error(exc.status, message, headers=headers)


def refusal(exc: Exception) -> ApiError | None:
    """The answer to a request the project's own errors refused (bad input 400, unknown
    404, clashing with the state 409, or a handler's own ApiError); None for anything else.
    The API sends it as JSON, the dashboard as a page."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidInput):
        return ApiError(400, str(exc), exc.field)
    if isinstance(exc, NotFound):
        return ApiError(404, str(exc))
    if isinstance(exc, Conflict):
        return ApiError(409, str(exc))
    return None


def _from_exception(request: web.Request, exc: Exception) -> web.Response:
    refused = refusal(exc)
    if refused is not None:
        return json_error(refused.status, str(refused), refused.field, refused.headers)
    if isinstance(exc, web.RequestPayloadError):
        # A body that does not match its Content-Encoding (or broken chunking) is the
        # caller's mistake; it used to surface as a 500.
        # The parser's own message is not passed on: for broken chunking it quotes the bytes.
        response = json_error(
            400,
            "request body could not be read: it does not match its "
            "Content-Encoding or chunked Transfer-Encoding; send it "
            "uncompressed or encoded as the headers say",
        )
        # The rest of the body cannot be skipped reliably: aiohttp drops the connection, so
        # tell the client not to reuse it.
        response.force_close()
        return response
    if is_database_outage(exc):
        log.warning(
            "database unavailable during request",
            extra={
                "method": request.method,
                "path": request.path,
                "error": str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__,
            },
        )
        return json_error(503, DB_UNAVAILABLE_MESSAGE, headers={"Retry-After": RETRY_AFTER_SECONDS})
    # Path only: query strings and headers may carry things that must not reach the logs.
    log.error(
        "unexpected error while handling a request",
        extra={"method": request.method, "path": request.path},
        exc_info=exc,
    )
    return json_error(500, "internal error; it has been logged")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc)
    except Exception as exc:
        return _from_exception(request, exc)
