"""GET /metrics: the Prometheus text format, without auth like /health.

Rendering reads only memory (counters and the health snapshot), so a scrape answers at
once while the database is down.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.prometheus import Metrics

METRICS = web.AppKey("metrics", Metrics)


async def metrics(request: web.Request) -> web.Response:
    # As prometheus-client's own exporters do: OpenMetrics when the scraper asks for it,
    # else the classic text format (version 0.0.4), which every Prometheus reads.
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encode(request.app[METRICS].registry)
    # Set as a header: aiohttp's content_type= would drop the version parameter.
    return web.Response(body=body, headers={"Content-Type": content_type})


ENDPOINTS = (
    Endpoint(
        "GET",
        "/metrics",
        metrics,
        "Prometheus metrics of this process",
        description="OpenMetrics when the scraper asks for it, else the text format "
        "0.0.4. Reads memory only.",
        replies={200: Reply("the metrics", media_type="text/plain")},
    ),
)


def add_routes(app: web.Application, metrics_: Metrics) -> None:
    app[METRICS] = metrics_
    register(app, ENDPOINTS)
