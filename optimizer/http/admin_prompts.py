"""Admin prompt API: POST /prompts, GET /prompts, GET /prompts/{name},
POST /prompts/{name}/versions, POST /prompts/{name}/rollback.

Each request runs in one transaction: a refused request writes nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from optimizer import prompts
from optimizer.clock import utcnow
from optimizer.db import session_factory
from optimizer.errors import InvalidInput
from optimizer.http.auth import admin_only
from optimizer.http.body import read_json_object, reject_unknown
from optimizer.http.keys import ENGINE

log = logging.getLogger("prompt_worker.http.prompts")

HTTP_ACTOR = "admin-api"
NEW_PROMPT_FIELDS = ("name", "content", "change_notes")
NEW_VERSION_FIELDS = ("content", "change_notes")
ROLLBACK_FIELDS = ("version", "reason")
DEFAULT_ROLLBACK_REASON = "rollback via the admin API"


def _required(body: dict[str, Any], field: str, what: str) -> Any:
    if field not in body:
        raise InvalidInput(f"{field} is required: {what}", field=field)
    return body[field]


def _in_transaction(engine: Engine, work: Any) -> Any:
    with session_factory(engine).begin() as session:
        return work(session)


def _name(request: web.Request) -> str:
    return prompts.validate_name(request.match_info["name"])


@admin_only
async def create_prompt(request: web.Request) -> web.Response:
    body = await read_json_object(request, NEW_PROMPT_FIELDS)
    name = prompts.validate_name(_required(body, "name", "the prompt's name"))
    content = _required(body, "content", "the text of version 1")

    def work(session: Session) -> dict[str, Any]:
        prompts.create_prompt(session, name, content, actor=HTTP_ACTOR, now=utcnow(),
                              change_notes=body.get("change_notes"))
        return prompts.prompt_document(session, name)

    document = await asyncio.to_thread(_in_transaction, request.app[ENGINE], work)
    log.info("prompt created", extra={"prompt": name, "via": "http"})
    return web.json_response(document, status=201, headers={"Location": f"/prompts/{name}"})


@admin_only
async def list_prompts(request: web.Request) -> web.Response:
    reject_unknown(request.query.keys(), (), what="query parameter")
    summaries = await asyncio.to_thread(
        _in_transaction, request.app[ENGINE], prompts.prompt_summaries)
    return web.json_response({"prompts": [s.to_dict() for s in summaries]})


@admin_only
async def show_prompt(request: web.Request) -> web.Response:
    name = _name(request)
    document = await asyncio.to_thread(
        _in_transaction, request.app[ENGINE], lambda s: prompts.prompt_document(s, name))
    return web.json_response(document)


@admin_only
async def add_version(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_json_object(request, NEW_VERSION_FIELDS)
    content = _required(body, "content", "the text of the new version")

    def work(session: Session) -> prompts.VersionView:
        return prompts.add_version(session, name, content,
                                   change_notes=body.get("change_notes"), now=utcnow())

    version = await asyncio.to_thread(_in_transaction, request.app[ENGINE], work)
    log.info("prompt version added", extra={"prompt": name, "version": version.number,
                                            "via": "http"})
    return web.json_response(version.to_dict(), status=201,
                             headers={"Location": f"/prompts/{name}"})


@admin_only
async def rollback(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_json_object(request, ROLLBACK_FIELDS)
    number = prompts.validate_version_number(
        _required(body, "version", "the version number to make active again"))
    reason = body.get("reason", DEFAULT_ROLLBACK_REASON)

    def work(session: Session) -> dict[str, Any]:
        prompts.rollback(session, name, number, actor=HTTP_ACTOR, reason=reason,
                         now=utcnow())
        return prompts.prompt_document(session, name)

    document = await asyncio.to_thread(_in_transaction, request.app[ENGINE], work)
    log.info("prompt rolled back", extra={"prompt": name, "version": number, "via": "http"})
    return web.json_response(document)


def add_routes(app: web.Application) -> None:
    app.router.add_post("/prompts", create_prompt)
    app.router.add_get("/prompts", list_prompts)
    app.router.add_get("/prompts/{name}", show_prompt)
    app.router.add_post("/prompts/{name}/versions", add_version)
    app.router.add_post("/prompts/{name}/rollback", rollback)
