"""GET /health (liveness, memory only) and GET /ready (the database answers at the schema
this code needs)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer import db
from optimizer.clock import utcnow
from optimizer.health import short_error
from optimizer.http.keys import ENGINE, HEALTH

READY_TIMEOUT_SECONDS = 3.0


@functools.cache
def _head_revision() -> str | None:
    # The migration scripts do not change while the process runs; read them once.
    return db.head_revision()


def not_ready_reason(engine: Engine) -> str | None:
    """Blocking. None when ready, else why not. Never raises: /ready must not answer 500."""
    try:
        head = _head_revision()
        current = db.current_revision(engine)
    except Exception as exc:
        return f"database unreachable: {short_error(exc)}"
    if current != head:
        return (f"database schema is at {current or 'nothing'}, code needs {head}: "
                "run `prompt-worker migrate`")
    return None


class ReadinessProbe:
    """Runs the check in a thread with a deadline. Probes that arrive while one check is
    still running share it, so a hanging database cannot pile up threads."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._inflight: asyncio.Future[str | None] | None = None

    async def reason(self) -> str | None:
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(
                asyncio.to_thread(not_ready_reason, self._engine))
        timeout = READY_TIMEOUT_SECONDS
        try:
            return await asyncio.wait_for(asyncio.shield(self._inflight), timeout)
        except TimeoutError:
            return f"database did not answer within {timeout:g} s"

    async def close(self) -> None:
        if self._inflight is not None and not self._inflight.done():
            self._inflight.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._inflight


READINESS = web.AppKey("readiness", ReadinessProbe)


async def health(request: web.Request) -> web.Response:
    body: dict[str, Any] = request.app[HEALTH].report(utcnow())
    return web.json_response(body)


async def ready(request: web.Request) -> web.Response:
    reason = await request.app[READINESS].reason()
    if reason is None:
        return web.json_response({"ready": True})
    return web.json_response({"ready": False, "reason": reason}, status=503)


async def _close_probe(app: web.Application) -> None:
    await app[READINESS].close()


def add_routes(app: web.Application) -> None:
    app[READINESS] = ReadinessProbe(app[ENGINE])
    app.on_cleanup.append(_close_probe)
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
