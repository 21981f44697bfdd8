"""The app's routing snapshot (optimizer.routing_refresh): created with the app, kept fresh
from the first request that needs it (the stamp poll, and LISTEN on PostgreSQL), stopped
with the app; its age exported to /metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from aiohttp import web
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from optimizer.prometheus import Metrics
from optimizer.routing_refresh import CHANNEL, RoutingCache, Waker
from optimizer.runtime.notify import listen

ROUTING_CACHE = web.AppKey("routing_cache", RoutingCache)


def install(app: web.Application, engine: Engine, metrics: Metrics) -> None:
    cache = RoutingCache(engine, _wakers(engine))
    app[ROUTING_CACHE] = cache
    metrics.registry.register(_AgeCollector(cache))

    async def stop(app: web.Application) -> None:
        await cache.stop()

    app.on_cleanup.append(stop)


class _AgeCollector(Collector):
    """Read at scrape time, from memory. No series before the first snapshot (a process
    that never served resolve or /v1/config has none): no age is better than a made-up one."""

    def __init__(self, cache: RoutingCache) -> None:
        self._cache = cache

    def collect(self) -> Iterable[GaugeMetricFamily]:
        age = self._cache.age()
        if age is None:
            return []
        return [
            GaugeMetricFamily(
                "prompt_worker_routing_snapshot_age_seconds",
                "Seconds since this process last confirmed its routing snapshot current "
                "(under the 1 s staleness bound while it reaches the database)",
                value=age,
            )
        ]


def _wakers(engine: Engine) -> list[Waker]:
    if engine.dialect.name != "postgresql":
        return []
    url = engine.url.render_as_string(hide_password=False)

    async def notified(wake: asyncio.Event) -> None:
        await listen(url, CHANNEL, wake, "routing changes", "routing notifications")

    return [notified]
