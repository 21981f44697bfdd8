"""Admin insight API: GET /insights?prompt=NAME&actionable=true|false&kind=K&limit=N.

Newest last_seen_at first. A bad value answers 400 naming the parameter; an unknown prompt
answers 404.
"""

from __future__ import annotations

import asyncio

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.db import read_only, session_factory
from optimizer.http.auth import admin_only
from optimizer.http.body import reject_unknown
from optimizer.http.keys import ENGINE
from optimizer.patterns import views

LIST_PARAMS = ("prompt", "actionable", "kind", "limit")


def _list(engine: Engine, prompt: str | None, actionable: bool | None, kind: str | None,
          limit: int) -> list[views.InsightView]:
    with session_factory(read_only(engine))() as session:
        return views.list_insights(session, prompt=prompt, actionable=actionable, kind=kind,
                                   limit=limit)


@admin_only
async def list_insights(request: web.Request) -> web.Response:
    query = request.query
    reject_unknown(query.keys(), LIST_PARAMS, what="query parameter")
    prompt = query.get("prompt")
    if prompt is not None:
        prompt = views.parse_prompt(prompt)
    kind = query.get("kind")
    if kind is not None:
        kind = views.parse_kind(kind)
    actionable = query.get("actionable")
    limit = query.get("limit")
    found = await asyncio.to_thread(
        _list, request.app[ENGINE], prompt,
        views.parse_actionable(actionable) if actionable is not None else None, kind,
        views.parse_limit(limit) if limit is not None else views.DEFAULT_LIMIT)
    return web.json_response({"insights": [v.to_dict() for v in found]})


def add_routes(app: web.Application) -> None:
    app.router.add_get("/insights", list_insights)
