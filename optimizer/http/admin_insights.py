"""Admin insight API: GET /insights?prompt=NAME&actionable=true|false&kind=K&limit=N.

Newest last_seen_at first. A bad value answers 400 naming the parameter; an unknown prompt
answers 404. An insight groups the findings about the same conversations: its evidence's
top level is its main facet's, and "facets" lists every finding it holds with its own
figures (optimizer.patterns.describe).
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.db import read_only, session_factory
from optimizer.http import responses as out
from optimizer.http.body import read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.keys import ENGINE
from optimizer.http.requests import InsightListQuery
from optimizer.patterns import views

LIST_PARAMS = tuple(InsightListQuery.model_fields)


def _list(engine: Engine, query: InsightListQuery) -> list[views.InsightView]:
    with session_factory(read_only(engine))() as session:
        return views.list_insights(
            session,
            prompt=query.prompt,
            actionable=query.actionable,
            kind=query.kind,
            limit=query.limit,
        )


async def list_insights(request: web.Request) -> web.Response:
    query = read_query(request, InsightListQuery)
    found = await asyncio.to_thread(_list, request.app[ENGINE], query)
    return web.json_response({"insights": [v.to_dict() for v in found]})


ENDPOINTS = (
    Endpoint(
        "GET",
        "/insights",
        list_insights,
        "List what pattern analysis found",
        auth="admin",
        query=InsightListQuery,
        replies={
            200: Reply("insights, most recently seen first", out.InsightList),
            404: Reply("no prompt with this name"),
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
