"""Bearer-token checks for the admin API (ADMIN_TOKEN) and the application API (INGEST_TOKEN).

Tokens are compared in constant time on bytes and never logged or echoed back.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from optimizer.http.errors import ApiError
from optimizer.http.keys import SETTINGS
from optimizer.http.signing import check_admin_signature

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="prompt-worker"'}


def _as_bytes(text: str) -> bytes:
    # surrogatepass: a header with undecodable bytes must fail the check, not raise.
    return text.encode("utf-8", "surrogatepass")


def presented_token(request: web.Request) -> str | None:
    """The token after "Bearer " in the Authorization header, or None."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_token(
    request: web.Request, expected: str | None, *, env_name: str, api_name: str
) -> None:
    """Raise ApiError unless the request carries `expected` as its bearer token."""
    if not expected:
        raise ApiError(503, f"{api_name} disabled: set {env_name}")
    given = presented_token(request)
    if given is None:
        raise ApiError(
            401,
            f"missing bearer token: send 'Authorization: Bearer <{env_name}>'",
            headers=_CHALLENGE,
        )
    if not hmac.compare_digest(_as_bytes(given), _as_bytes(expected)):
        raise ApiError(
            401, f"invalid bearer token: it does not match {env_name}", headers=_CHALLENGE
        )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_only(handler: Handler) -> Handler:
    """Guard a route with ADMIN_TOKEN, and with a signature when ADMIN_HMAC_SECRET is set."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        require_token(
            request, request.app[SETTINGS].admin_token, env_name="ADMIN_TOKEN", api_name="admin API"
        )
        await check_admin_signature(request)
        return await handler(request)

    return guarded


def ingest_only(handler: Handler) -> Handler:
    """Guard a route with INGEST_TOKEN."""

    @functools.wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        require_token(
            request,
            request.app[SETTINGS].ingest_token,
            env_name="INGEST_TOKEN",
            api_name="application API",
        )
        return await handler(request)

    return guarded
