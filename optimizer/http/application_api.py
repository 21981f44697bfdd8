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
from optimizer.http import responses as out
from optimizer.http.body import parse_json_document, read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.keys import ENGINE
from optimizer.http.rate_limit import rate_limited
from optimizer.http.requests import ConversationsBody, ResolveQuery
from optimizer.resolve import resolve

log = logging.getLogger("prompt_worker.http.application")

RESOLVE_PARAMS = tuple(ResolveQuery.model_fields)


@rate_limited
async def resolve_prompt(request: web.Request) -> web.Response:
    query = read_query(request, ResolveQuery)
    answer = await asyncio.to_thread(
        resolve, read_only(request.app[ENGINE]), request.match_info["name"], query.unit_id
    )
    return web.json_response(answer)


@rate_limited
async def post_conversations(request: web.Request) -> web.Response:
    # Not read as ConversationsBody: ingest validates each record as ConversationRecord and
    # reports every bad field of every row, not only the first problem.
    body = parse_json_document(await request.read())
    try:
        accepted = await asyncio.to_thread(ingest.ingest, request.app[ENGINE], body, now=utcnow())
    except ingest.RowsInvalid as exc:
        return web.json_response(
            {"error": str(exc), "field": None, "errors": [error.to_dict() for error in exc.errors]},
            status=400,
        )
    log.info("conversations ingested", extra={"accepted": accepted})
    return web.json_response({"accepted": accepted}, status=202)


_LIMITED = Reply("over the rate limit of this token", out.Error, headers=("Retry-After",))
ENDPOINTS = (
    Endpoint(
        "GET",
        "/v1/prompts/{name}/resolve",
        resolve_prompt,
        "Which version of the prompt this unit gets",
        auth="ingest",
        query=ResolveQuery,
        description="Sticky: the same unit gets the same arm of a running experiment on "
        "every call and in every process. Only reads.",
        replies={
            200: Reply("the version to use", out.Resolved),
            404: Reply("no prompt with this name"),
            409: Reply("the prompt has no active version"),
            429: _LIMITED,
        },
    ),
    Endpoint(
        "POST",
        "/v1/conversations",
        post_conversations,
        "Log conversations",
        auth="ingest",
        body=ConversationsBody,
        description="One record, or up to 1,000 stored all or nothing.",
        replies={
            202: Reply("every record was stored", out.Accepted),
            400: Reply(
                "bad records: nothing was stored; every problem listed, or "
                "a body that is not a record or a batch",
                out.RowErrors,
            ),
            409: Reply(
                "a prompt, version or experiment was deleted while the "
                "batch was stored; send it again"
            ),
            429: _LIMITED,
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
