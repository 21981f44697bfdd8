"""Admin experiment API: POST /experiments, GET /experiments, GET /experiments/{id},
POST /experiments/{id}/stop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine

from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.errors import InvalidInput
from optimizer.experiments import store
from optimizer.experiments.defaults import SETTING_FIELDS, settings_with_defaults
from optimizer.experiments.validation import ExperimentSettings, parse_stop_reason
from optimizer.http.auth import admin_only
from optimizer.http.body import (
    parse_json_document,
    path_id,
    query_int,
    query_text,
    read_json_object,
    reject_unknown,
)
from optimizer.http.keys import ENGINE, SETTINGS, STATS

log = logging.getLogger("prompt_worker.http.experiments")

NEW_EXPERIMENT_FIELDS = ("prompt", "variants", "weights", *SETTING_FIELDS)
LIST_PARAMS = ("status", "prompt", "limit")
STOP_FIELDS = ("reason",)
DEFAULT_LIMIT, MAX_LIMIT = 50, 500
HTTP_ACTOR = "admin (HTTP)"


def _create(engine: Engine, body: dict[str, Any],
            settings: ExperimentSettings) -> store.ExperimentView:
    with session_factory(engine).begin() as session:
        return store.create_experiment(session, body.get("prompt"), body.get("variants"),
                                       weights=body.get("weights"), settings=settings,
                                       created_by=HTTP_ACTOR, now=utcnow())


@admin_only
async def create_experiment(request: web.Request) -> web.Response:
    body = await read_json_object(request, NEW_EXPERIMENT_FIELDS)
    if "prompt" not in body:
        raise InvalidInput("prompt is required: the name of the prompt to test",
                           field="prompt")
    if "variants" not in body:
        raise InvalidInput("variants is required: a list of candidate version numbers "
                           "(or queue an experiment_creation job to use the newest ones)",
                           field="variants")
    settings = settings_with_defaults(body, request.app[SETTINGS])
    view = await asyncio.to_thread(_create, request.app[ENGINE], body, settings)
    request.app[STATS].add("experimentsCreated")
    log.info("experiment created", extra={"experiment_id": view.id, "prompt": view.prompt,
                                          "via": "http"})
    return web.json_response(view.to_dict(), status=201,
                             headers={"Location": f"/experiments/{view.id}"})


def _list(engine: Engine, status: str | None, prompt: str | None,
          limit: int) -> list[store.ExperimentView]:
    with session_factory(engine)() as session:
        return store.list_experiments(session, status=status, prompt=prompt, limit=limit)


@admin_only
async def list_experiments(request: web.Request) -> web.Response:
    query = request.query
    reject_unknown(query.keys(), LIST_PARAMS, what="query parameter")
    limit = query_int(query, "limit", default=DEFAULT_LIMIT, minimum=1, maximum=MAX_LIMIT)
    views = await asyncio.to_thread(_list, request.app[ENGINE], query_text(query, "status"),
                                    query_text(query, "prompt"), limit)
    return web.json_response({"experiments": [v.to_dict() for v in views]})


def _get(engine: Engine, experiment_id: int) -> store.ExperimentView:
    with session_factory(engine)() as session:
        return store.get_experiment(session, experiment_id)


@admin_only
async def get_experiment(request: web.Request) -> web.Response:
    view = await asyncio.to_thread(_get, request.app[ENGINE], path_id(request))
    return web.json_response(view.to_dict())


def _stop(engine: Engine, experiment_id: int, reason: str | None) -> store.ExperimentView:
    with session_factory(engine).begin() as session:
        return store.stop_experiment(session, experiment_id, actor=HTTP_ACTOR, reason=reason,
                                     now=utcnow())


async def _optional_reason(request: web.Request) -> str | None:
    """The body is optional here: nothing, or {"reason": "..."}."""
    raw = await request.read()
    if not raw.strip():
        return None
    body = parse_json_document(raw)
    if not isinstance(body, dict):
        raise InvalidInput("request body must be a JSON object like {\"reason\": \"...\"} "
                           "or empty")
    reject_unknown(body, STOP_FIELDS, what="field")
    return parse_stop_reason(body.get("reason"))


@admin_only
async def stop_experiment(request: web.Request) -> web.Response:
    experiment_id = path_id(request)
    reason = await _optional_reason(request)
    view = await asyncio.to_thread(_stop, request.app[ENGINE], experiment_id, reason)
    log.info("experiment stopped", extra={"experiment_id": view.id, "via": "http"})
    return web.json_response(view.to_dict())


def add_routes(app: web.Application) -> None:
    app.router.add_post("/experiments", create_experiment)
    app.router.add_get("/experiments", list_experiments)
    app.router.add_get("/experiments/{id}", get_experiment)
    app.router.add_post("/experiments/{id}/stop", stop_experiment)
