"""The app's routing snapshot (optimizer.routing_refresh): created with the app, kept fresh
from the first request that needs it (the stamp poll, and LISTEN on PostgreSQL), stopped
with the app."""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.routing_refresh import CHANNEL, RoutingCache, Waker
from optimizer.runtime.notify import listen

ROUTING = web.AppKey("routing", RoutingCache)


def install(app: web.Application, engine: Engine) -> None:
    cache = RoutingCache(engine, _wakers(engine))
    app[ROUTING] = cache

    async def stop(app: web.Application) -> None:
        await cache.stop()

    app.on_cleanup.append(stop)


def _wakers(engine: Engine) -> list[Waker]:
    if engine.dialect.name != "postgresql":
        return []
    url = engine.url.render_as_string(hide_password=False)

    async def notified(wake: asyncio.Event) -> None:
        await listen(url, CHANNEL, wake, "routing changes", "routing notifications")

    return [notified]
