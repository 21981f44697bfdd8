"""The dashboard's middlewares, outermost first: Server-Timing (timing.py), security
headers, HTML error pages, then access (UI_ACCESS and ADMIN_TOKEN, the session, the Origin
and CSRF checks on POSTs, and the read-only refusal).

Everything answered under /ui/ is HTML: the parent app's JSON error middleware wraps these
(aiohttp applies a parent's middlewares outside a subapp's), so errors are turned into pages
here before it sees them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from http import HTTPStatus

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from optimizer.clock import utcnow
from optimizer.http.errors import (
    DB_UNAVAILABLE_MESSAGE,
    RETRY_AFTER_SECONDS,
    is_database_outage,
    refusal,
)
from optimizer.http.keys import ENGINE, SETTINGS
from optimizer.ui import sessions
from optimizer.ui.access import can_write, unavailable
from optimizer.ui.csrf import csrf_ok, origin_ok
from optimizer.ui.render import render
from optimizer.ui.web import SESSION_TOKEN, html, is_local, posted, see_other, ui_context

log = logging.getLogger("prompt_worker.ui")

COOKIE = "pw_ui"  # the session's cookie (Path=/ui/)
LOGIN = "/ui/login"
LOGOUT = "/ui/logout"
STATIC = "/ui/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# No inline script or style anywhere (the SVG charts use presentation attributes), so the
# policy needs no 'unsafe-inline' and no nonce.
CSP = (
    "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    # Pages show prompts and jobs: no shared cache or back-button copy may keep them.
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # A ?next= or filter query stays on this site.
    "Referrer-Policy": "same-origin",
}
CSRF_MESSAGE = "missing or invalid CSRF token: reload the page and submit the form again"
ORIGIN_MESSAGE = (
    "cross-site request refused: the Origin header does not match this host; "
    "submit the form from the dashboard itself"
)
READ_ONLY_MESSAGE = (
    "the dashboard is read-only (UI_ACCESS=read-only): nothing can be changed from here; "
    "set UI_ACCESS=full to allow changes"
)
_KEPT_HEADERS = ("allow", "retry-after")


def error_page(
    request: web.Request,
    status: int,
    message: str,
    *,
    field: str | None = None,
    title: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    """The HTML error page: status, a title, the message and the field at fault."""
    context = {
        "status": status,
        "title": title or HTTPStatus(status).phrase,
        "message": message,
        "field": field,
        "ui": ui_context(request, ""),
    }
    return html(render("error.html", context), status, headers)


@web.middleware
async def headers_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects raised by a handler or by aiohttp
        exc.headers.update(SECURITY_HEADERS)
        raise
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    return response


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own errors (no such page, wrong method, body too large) as pages."""
    if isinstance(exc, web.HTTPNotFound):
        message = f"There is no page at {request.path}."
    elif isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        message = f"{request.method} is not allowed on {request.path}; use {allowed}."
    elif isinstance(exc, web.HTTPRequestEntityTooLarge):
        message = (
            f"The form is larger than the limit of {request.client_max_size} bytes "
            "(MAX_BODY_BYTES)."
        )
    else:
        message = exc.reason
    headers = {k: v for k, v in exc.headers.items() if k.lower() in _KEPT_HEADERS}
    return error_page(request, exc.status, message, headers=headers)


def _from_exception(request: web.Request, exc: Exception) -> web.Response:
    """The project's errors as pages; anything unexpected logged and shown as a bare 500."""
    refused = refusal(exc)
    if refused is not None:
        return error_page(
            request, refused.status, str(refused), field=refused.field, headers=refused.headers
        )
    if isinstance(exc, web.RequestPayloadError):
        return error_page(request, 400, "The form could not be read; send it again.")
    if is_database_outage(exc):
        log.warning(
            "database unavailable during a dashboard request",
            extra={"method": request.method, "path": request.path},
        )
        return error_page(
            request,
            503,
            DB_UNAVAILABLE_MESSAGE,
            title="Database unavailable",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    # Path only: query strings may carry things that must not reach the logs.
    log.error(
        "unexpected error while handling a dashboard request",
        extra={"method": request.method, "path": request.path},
        exc_info=exc,
    )
    return error_page(request, 500, "Internal error; it has been logged.")


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_http_exception(request, exc)
    except Exception as exc:
        return _from_exception(request, exc)


def login_url(request: web.Request) -> str:
    """The login page, with ?next= the page asked for when it was a local GET."""
    if request.method in SAFE_METHODS and is_local(request.path_qs):
        return str(URL(LOGIN).with_query(next=request.path_qs))
    return LOGIN


async def _session_token(request: web.Request) -> str | None:
    """The cookie's token when it names a live session."""
    token = request.cookies.get(COOKIE)
    admin_token = request.config_dict[SETTINGS].admin_token
    if not token or not admin_token:
        return None
    engine = request.config_dict[ENGINE]
    live = await asyncio.to_thread(sessions.lookup, engine, admin_token, token, utcnow())
    return token if live else None


@web.middleware
async def access_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(STATIC):  # the login and error pages need the stylesheet
        return await handler(request)
    settings = request.config_dict[SETTINGS]
    closed = unavailable(settings)
    if closed is not None:
        return error_page(request, 503, closed, title="Dashboard unavailable")
    unsafe = request.method not in SAFE_METHODS
    if unsafe and not origin_ok(request.headers.get("Origin"), request.host):
        return error_page(request, 403, ORIGIN_MESSAGE)
    if request.path == LOGIN:  # checks its own nonce and throttle (routes_auth)
        return await handler(request)
    token = await _session_token(request)
    if token is None:
        return see_other(login_url(request))
    request[SESSION_TOKEN] = token
    if unsafe:
        sent = (await posted(request)).get("csrf")
        if not isinstance(sent, str) or not csrf_ok(token, sent):
            return error_page(request, 403, CSRF_MESSAGE)
        if not can_write(settings) and request.path != LOGOUT:
            return error_page(request, 403, READ_ONLY_MESSAGE)
    return await handler(request)
