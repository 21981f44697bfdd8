"""GET /v1/config (Bearer INGEST_TOKEN): everything an SDK needs to resolve prompts locally
(optimizer.client_config), with a strong ETag; a matching If-None-Match answers 304."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from sqlalchemy.orm import Session

from optimizer.client_config import client_config, tag_matches
from optimizer.db import read_only
from optimizer.http import responses as out
from optimizer.http.body import read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.keys import ENGINE
from optimizer.http.rate_limit import rate_limited
from optimizer.http.requests import NoQuery


def _read(request: web.Request) -> tuple[dict[str, Any], str]:
    with Session(read_only(request.app[ENGINE])) as session:
        return client_config(session)


@rate_limited
async def get_config(request: web.Request) -> web.Response:
    read_query(request, NoQuery)
    document, tag = await asyncio.to_thread(_read, request)
    if tag_matches(request.headers.get("If-None-Match"), tag):
        return web.Response(status=304, headers={"ETag": tag})
    return web.json_response(document, headers={"ETag": tag})


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
