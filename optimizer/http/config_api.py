"""GET /v1/config (Bearer INGEST_TOKEN): everything an SDK needs to resolve prompts locally
(optimizer.client_config), with a strong ETag; a matching If-None-Match answers 304.
Served from the process's routing snapshot (optimizer.routing_refresh), the document
resolve itself evaluates."""

from __future__ import annotations

from aiohttp import web

from optimizer.client_config import tag_matches
from optimizer.http import responses as out
from optimizer.http.body import read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.rate_limit import rate_limited
from optimizer.http.requests import NoQuery
from optimizer.http.routing_app import ROUTING_CACHE


@rate_limited
async def get_config(request: web.Request) -> web.Response:
    # The process's snapshot, serialized and tagged once when it was read: a 304 or a 200
    # costs no database access and no encoding.
    read_query(request, NoQuery)
    cache = request.app[ROUTING_CACHE]
    snapshot = cache.fresh() or await cache.current()
    if tag_matches(request.headers.get("If-None-Match"), snapshot.etag):
        return web.Response(status=304, headers={"ETag": snapshot.etag})
    return web.Response(
        body=snapshot.config_body,
        content_type="application/json",
        charset="utf-8",
        headers={"ETag": snapshot.etag},
    )


ENDPOINTS = (
    Endpoint(
        "GET",
        "/v1/config",
        get_config,
        "Everything an SDK needs to resolve prompts locally",
        auth="ingest",
        query=NoQuery,
        description="Every prompt with its active version, and its running or paused "
        "experiment with all arms; evaluated with the hashing scheme it names "
        "(docs/assignment.md), it gives every unit what resolve gives. Send the ETag back "
        "in If-None-Match to get 304 while nothing changed.",
        replies={
            200: Reply("the configuration", out.ClientConfig, headers=("ETag",)),
            304: Reply(
                "unchanged since the ETag sent in If-None-Match", media_type="", headers=("ETag",)
            ),
            429: Reply("over the rate limit of this token", out.Error, headers=("Retry-After",)),
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
