"""GET /health (liveness, memory only) and GET /ready (the database answers at the schema
this code needs).

Both answer without authentication, so what goes wrong with the database is told in
generic words: the driver's text names the host, port and user. A caller with the admin
bearer token gets the detail, and the log always has it. Only the token is checked, not an
ADMIN_HMAC_SECRET signature: the replay memory behind signatures lives in the database,
and these probes must answer while it is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer import db
from optimizer.clock import utcnow
from optimizer.health import DATABASE_UNAVAILABLE, short_error
from optimizer.http import responses as out
from optimizer.http.auth import require_token
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.errors import ApiError
from optimizer.http.keys import ENGINE, HEALTH, SETTINGS
from optimizer.problems import configuration_problems

log = logging.getLogger("prompt_worker.ready")

READY_TIMEOUT_SECONDS = 3.0


@dataclass(frozen=True)
class NotReady:
    reason: str  # safe for anyone
    detail: str | None = None  # the driver's text: for admins and the log only

    def shown(self, detailed: bool) -> str:
        return f"{self.reason}: {self.detail}" if detailed and self.detail else self.reason


@functools.cache
def _head_revision() -> str | None:
    # The migration scripts do not change while the process runs; read them once.
    return db.head_revision()


def not_ready_reason(engine: Engine) -> NotReady | None:
    """Blocking. None when ready, else why not. Never raises: /ready must not answer 500."""
    try:
        head = _head_revision()
        current = db.current_revision(engine)
    except Exception as exc:
        return NotReady(DATABASE_UNAVAILABLE, short_error(exc))
    if current != head:
        return NotReady(
            f"database schema is at {current or 'nothing'}, code needs {head}: "
            "run `prompt-worker migrate`"
        )
    return None


class ReadinessProbe:
    """Runs the check in a thread with a deadline. Probes that arrive while one check is
    still running share it, so a hanging database cannot pile up threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._inflight: asyncio.Future[NotReady | None] | None = None
        self._last: NotReady | None = None

    async def reason(self) -> NotReady | None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(
                asyncio.to_thread(not_ready_reason, self._engine)
            )
        timeout = READY_TIMEOUT_SECONDS
        try:
            found = await asyncio.wait_for(asyncio.shield(self._inflight), timeout)
        except TimeoutError:
            found = NotReady(f"database did not answer within {timeout:g} s")
        self._log_change(found)
        return found

    def _log_change(self, found: NotReady | None) -> None:
        # Probes come every few seconds: log when the answer changes, not on every probe.
        if found != self._last:
            if found is not None:
                log.warning("not ready", extra={"reason": found.shown(detailed=True)})
            elif self._last is not None:
                log.info("ready again")
        self._last = found

    async def close(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight


READINESS = web.AppKey("readiness", ReadinessProbe)


def is_admin(request: web.Request) -> bool:
    """Whether the request carries ADMIN_TOKEN (checked in constant time, never logged)."""
    try:
        require_token(
            request, request.app[SETTINGS].admin_token, env_name="ADMIN_TOKEN", api_name="admin API"
        )
    except ApiError:
        return False
    return True


async def health(request: web.Request) -> web.Response:
    body: dict[str, Any] = request.app[HEALTH].report(utcnow(), detailed=is_admin(request))
    body["problems"] = [p.to_dict() for p in configuration_problems(request.app[SETTINGS])]
    return web.json_response(body)


async def ready(request: web.Request) -> web.Response:
    found = await request.app[READINESS].reason()
    if found is None:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "reason": found.shown(is_admin(request))}, status=503)


async def _close_probe(app: web.Application) -> None:
    await app[READINESS].close()


ENDPOINTS = (
    Endpoint(
        "GET",
        "/health",
        health,
        "Liveness",
        description="Always 200; reads memory only, never the database. With the admin "
        "token, a database error is told in the driver's words.",
        replies={
            200: Reply(
                "counters, queue depth, the last database reading and configuration problems",
                out.Health,
            )
        },
    ),
    Endpoint(
        "GET",
        "/ready",
        ready,
        "Readiness",
        description="Whether the database answers and is migrated.",
        replies={
            200: Reply("ready", out.Ready),
            503: Reply("not ready, with the reason", out.Ready),
        },
    ),
)


def add_routes(app: web.Application) -> None:
    app[READINESS] = ReadinessProbe(app[ENGINE])
    app.on_cleanup.append(_close_probe)
    register(app, ENDPOINTS)
