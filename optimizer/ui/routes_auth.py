"""GET/POST /ui/login and POST /ui/logout.

Login takes ADMIN_TOKEN in a form with a double-submit nonce (there is no session to derive
a CSRF token from yet). The INGEST_TOKEN and wrong tokens are refused and counted per remote
address (login_limit). A success stores an HMAC of a fresh random token (sessions.py) and
sets it as an HttpOnly, SameSite=Strict cookie limited to /ui/.
"""

from __future__ import annotations

import asyncio
import hmac
import math
import time

from aiohttp import web

from optimizer.clock import utcnow
from optimizer.config import Settings
from optimizer.http.keys import ENGINE, SETTINGS
from optimizer.ui import sessions
from optimizer.ui.csrf import new_nonce, nonce_ok
from optimizer.ui.guard import COOKIE, LOGIN
from optimizer.ui.login_limit import LoginLimiter
from optimizer.ui.render import render
from optimizer.ui.web import (
    PREFIX,
    SESSION_TOKEN,
    form,
    html,
    safe_next,
    see_other,
    ui_context,
    with_notice,
)

NONCE_COOKIE = "pw_ui_login"
NONCE_SECONDS = 3600  # how long a login form may stay open
LOGIN_LIMIT = web.AppKey("ui_login_limit", LoginLimiter)

TOKEN_MISSING = "Enter the admin token."
NONCE_BAD = (
    "The login form has expired or your browser did not send its cookie: "
    "reload the page and log in again (cookies must be allowed for this site)."
)
INGEST_REFUSED = (
    "That is the INGEST_TOKEN, the application API's token: it cannot open the dashboard. "
    "Log in with ADMIN_TOKEN."
)
WRONG_TOKEN = "Wrong token: it does not match ADMIN_TOKEN."


def _same(a: str, b: str | None) -> bool:
    if not b:
        return False
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )


def _secure(request: web.Request, settings: Settings) -> bool:
    return settings.ui_secure_cookies or request.secure


def _address(request: web.Request) -> str:
    # The peer address: behind a proxy every client shares the proxy's (docs/security.md).
    return request.remote or "unknown"


def _login_page(
    request: web.Request, *, status: int = 200, error: str | None = None
) -> web.Response:
    """The login form with a fresh nonce in its cookie and hidden field."""
    nonce = new_nonce()
    next_path = safe_next(request.query.get("next"))
    context = {"ui": ui_context(request, ""), "error": error, "nonce": nonce, "next": next_path}
    response = html(render("login.html", context), status)
    response.set_cookie(
        NONCE_COOKIE,
        nonce,
        path=LOGIN,
        max_age=NONCE_SECONDS,
        httponly=True,
        samesite="Strict",
        secure=_secure(request, request.config_dict[SETTINGS]),
    )
    return response


async def login_form(request: web.Request) -> web.Response:
    return _login_page(request)


def _refusal(token: str, settings: Settings) -> str | None:
    """Why `token` does not open the dashboard, or None when it is ADMIN_TOKEN."""
    if not token:
        return TOKEN_MISSING
    if _same(token, settings.ingest_token):
        return INGEST_REFUSED
    if settings.admin_token is None or not _same(token, settings.admin_token):
        return WRONG_TOKEN
    return None


async def login(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    limiter = request.app[LOGIN_LIMIT]
    address = _address(request)
    wait = limiter.retry_after(address)
    if wait > 0:
        seconds = max(1, math.ceil(wait))
        response = _login_page(
            request,
            status=429,
            error=f"Too many failed logins from your address: try again in {seconds} s.",
        )
        response.headers["Retry-After"] = str(seconds)
        return response
    fields = await form(request)
    if not nonce_ok(request.cookies.get(NONCE_COOKIE), fields.get("nonce")):
        return _login_page(request, status=403, error=NONCE_BAD)
    refusal = _refusal(fields.get("token", "").strip(), settings)
    if refusal is not None:
        if refusal != TOKEN_MISSING:
            limiter.fail(address)
        return _login_page(request, status=400 if refusal == TOKEN_MISSING else 403, error=refusal)
    limiter.succeed(address)
    assert settings.admin_token is not None  # _refusal matched it
    token = await asyncio.to_thread(
        sessions.create,
        request.config_dict[ENGINE],
        settings.admin_token,
        ua=request.headers.get("User-Agent"),
        now=utcnow(),
        hours=settings.ui_session_hours,
    )
    response = see_other(safe_next(fields.get("next")))
    response.set_cookie(
        COOKIE,
        token,
        path=PREFIX,
        max_age=math.ceil(settings.ui_session_hours * 3600),
        httponly=True,
        samesite="Strict",
        secure=_secure(request, settings),
    )
    response.del_cookie(NONCE_COOKIE, path=LOGIN)
    return response


async def logout(request: web.Request) -> web.Response:
    settings = request.config_dict[SETTINGS]
    assert settings.admin_token is not None  # the guard let a session through
    await asyncio.to_thread(
        sessions.revoke, request.config_dict[ENGINE], settings.admin_token, request[SESSION_TOKEN]
    )
    response = see_other(with_notice(LOGIN, "logged-out"))
    response.del_cookie(COOKIE, path=PREFIX)
    # Pages kept for the back button go too (ui.js reloads any that a browser still restores).
    response.headers["Clear-Site-Data"] = '"cache"'
    return response


def add_routes(ui: web.Application) -> None:
    ui[LOGIN_LIMIT] = LoginLimiter(time.monotonic)
    ui.router.add_get("/login", login_form)
    ui.router.add_post("/login", login)
    ui.router.add_post("/logout", logout)
