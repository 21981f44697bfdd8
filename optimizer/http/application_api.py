"""The application API (Bearer INGEST_TOKEN; the admin token does not open it):

GET  /v1/prompts/{name}/resolve?unit_id=U   which version this unit gets (sticky; answered
                                            from memory: optimizer.routing_refresh)
POST /v1/conversations                      one record or {"conversations": [...]}; 202
                                            (optional Idempotency-Key: optimizer.idempotency)

A batch with bad rows answers 400 {"error", "field": null, "errors": [{index, field,
problem}, ...]} and stores nothing. Each token is rate limited (optimizer.http.rate_limit):
over the limit answers 429 with Retry-After.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from multidict import MultiMapping

from optimizer import idempotency, ingest
from optimizer.clock import utcnow
from optimizer.http import responses as out
from optimizer.http.body import read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.errors import ApiError
from optimizer.http.fast_json import parse_json_document
from optimizer.http.keys import ENGINE
from optimizer.http.rate_limit import rate_limited
from optimizer.http.requests import ConversationsBody, ResolveQuery
from optimizer.http.routing_app import ROUTING_CACHE
from optimizer.resolve import MAX_UNIT_ID, check_prompt_name
from optimizer.text_input import text_problem

log = logging.getLogger("prompt_worker.http.application")

RESOLVE_PARAMS = tuple(ResolveQuery.model_fields)


def plain_unit_id(query: MultiMapping[str]) -> str | None:
    """The unit id of a query that is exactly one usable `unit_id`, checked directly; None
    for anything else, which ResolveQuery then reads and refuses with its usual message.
    The model costs more than the rest of a resolve's own work; both accept the same
    queries with the same value (tests/property/test_resolve_query_properties.py)."""
    if len(query) != 1:
        return None
    unit = query.get("unit_id")
    return unit if unit is not None and text_problem(unit, MAX_UNIT_ID) is None else None


@rate_limited
async def resolve_prompt(request: web.Request) -> web.Response:
    # From the process's snapshot, on the event loop: no database access and no thread,
    # except right after this process changed routing itself (optimizer.routing_refresh).
    unit_id = plain_unit_id(request.query) or read_query(request, ResolveQuery).unit_id
    name = check_prompt_name(request.match_info["name"])
    cache = request.app[ROUTING_CACHE]
    snapshot = cache.fresh() or await cache.current()
    body = snapshot.routing.body(name, unit_id)
    return web.Response(body=body, content_type="application/json", charset="utf-8")


@rate_limited
async def post_conversations(request: web.Request) -> web.Response:
    # Not read as ConversationsBody: ingest validates each record as ConversationRecord and
    # reports every bad field of every row, not only the first problem.
    raw = await request.read()
    key = idempotency.claim(request.headers.getall(idempotency.HEADER, []), raw)
    body = parse_json_document(raw)
    try:
        accepted = await asyncio.to_thread(
            ingest.ingest, request.app[ENGINE], body, now=utcnow(), key=key
        )
    except ingest.RowsInvalid as exc:
        return web.json_response(
            {"error": str(exc), "field": None, "errors": [error.to_dict() for error in exc.errors]},
            status=400,
        )
    except idempotency.KeyReused as exc:
        raise ApiError(409, str(exc), field=idempotency.HEADER) from None
    log.info("conversations ingested", extra={"accepted": accepted})
    return web.json_response({"accepted": accepted}, status=202)


IDEMPOTENCY_KEY = {
    "name": idempotency.HEADER,
    "in": "header",
    "required": False,
    "schema": {
        "type": "string",
        "minLength": 1,
        "maxLength": idempotency.MAX_LENGTH,
        "pattern": "^[ -~]+$",
    },
    "description": "Optional; 1 to 200 printable ASCII characters chosen by the caller, "
    "one per batch. A retry with the same key and the same body bytes within 24 h answers "
    "the first 202 and stores nothing; the same key with another body is a 409. Kept in "
    "the database, so it holds across restarts and replicas.",
}
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
        description="One record, or up to 1,000 stored all or nothing. With an "
        "Idempotency-Key, a retry of the same body within 24 h answers the first 202 "
        "without storing again.",
        headers=(IDEMPOTENCY_KEY,),
        replies={
            202: Reply(
                "every record was stored (or, for a retry with the same Idempotency-Key "
                "and body, had been)",
                out.Accepted,
            ),
            400: Reply(
                "bad records: nothing was stored; every problem listed, or "
                "a body that is not a record or a batch, or a malformed Idempotency-Key",
                out.RowErrors,
            ),
            409: Reply(
                "the Idempotency-Key was used in the last 24 h for a different body, or a "
                "prompt, version or experiment was deleted while the batch was stored; "
                "nothing was stored"
            ),
            429: _LIMITED,
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
