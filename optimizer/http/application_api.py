"""The application API (Bearer INGEST_TOKEN; the admin token does not open it):

GET  /v1/prompts/{name}/resolve?unit_id=U   which version this unit gets (sticky; no write)
POST /v1/conversations                      one record or {"conversations": [...]}; 202

A batch with bad rows answers 400 {"error", "field": null, "errors": [{index, field,
problem}, ...]} and stores nothing. Each token is rate limited (optimizer.http.rate_limit):
over the limit answers 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from optimizer import ingest
from optimizer.clock import utcnow
from optimizer.db import read_only
from optimizer.errors import InvalidInput
from optimizer.http.auth import ingest_only
from optimizer.http.body import parse_json_document, reject_unknown
from optimizer.http.keys import ENGINE
from optimizer.http.rate_limit import rate_limited
from optimizer.resolve import resolve

log = logging.getLogger("prompt_worker.http.application")

RESOLVE_PARAMS = ("unit_id",)


@ingest_only
@rate_limited
async def resolve_prompt(request: web.Request) -> web.Response:
    reject_unknown(request.query.keys(), RESOLVE_PARAMS, what="query parameter")
    unit_id = request.query.get("unit_id")
    if unit_id is None:
        raise InvalidInput("unit_id is required: ?unit_id=<the user or session id>",
                           field="unit_id")
    answer = await asyncio.to_thread(resolve, read_only(request.app[ENGINE]),
                                     request.match_info["name"], unit_id)
    return web.json_response(answer)


@ingest_only
@rate_limited
async def post_conversations(request: web.Request) -> web.Response:
    body = parse_json_document(await request.read())
    try:
        accepted = await asyncio.to_thread(ingest.ingest, request.app[ENGINE], body,
                                           now=utcnow())
    except ingest.RowsInvalid as exc:
        return web.json_response(
            {"error": str(exc), "field": None,
             "errors": [error.to_dict() for error in exc.errors]}, status=400)
    log.info("conversations ingested", extra={"accepted": accepted})
    return web.json_response({"accepted": accepted}, status=202)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/prompts/{name}/resolve", resolve_prompt)
    app.router.add_post("/v1/conversations", post_conversations)
