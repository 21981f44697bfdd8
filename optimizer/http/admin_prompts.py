"""Admin prompt API: POST /prompts, GET /prompts, GET /prompts/{name},
POST /prompts/{name}/versions, POST /prompts/{name}/rollback, POST /prompts/{name}/settings.

Each request runs in one transaction: a refused request writes nothing."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from optimizer import prompt_settings, prompt_text, prompts
from optimizer.clock import utcnow
from optimizer.config import PromotionMode
from optimizer.db import session_factory
from optimizer.http import responses as out
from optimizer.http.body import read_body, read_query
from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.keys import ENGINE, SETTINGS
from optimizer.http.requests import NewPromptBody, NewVersionBody, NoQuery, RollbackBody

log = logging.getLogger("prompt_worker.http.prompts")

HTTP_ACTOR = "admin-api"
NEW_PROMPT_FIELDS = tuple(NewPromptBody.model_fields)
NEW_VERSION_FIELDS = tuple(NewVersionBody.model_fields)
ROLLBACK_FIELDS = tuple(RollbackBody.model_fields)
SETTINGS_FIELDS = tuple(prompt_settings.PromptSettingsBody.model_fields)


def _in_transaction(engine: Engine, work: Any) -> Any:
    with session_factory(engine).begin() as session:
        return work(session)


def _name(request: web.Request) -> str:
    return prompt_text.validate_name(request.match_info["name"])


def _mode(request: web.Request) -> PromotionMode:
    """The PROMOTION_MODE setting: what a prompt without its own mode follows."""
    return request.app[SETTINGS].promotion_mode


async def create_prompt(request: web.Request) -> web.Response:
    body = await read_body(request, NewPromptBody)
    name = prompt_text.validate_name(body.name)
    mode = _mode(request)

    def work(session: Session) -> dict[str, Any]:
        prompts.create_prompt(
            session,
            name,
            body.content,
            actor=HTTP_ACTOR,
            now=utcnow(),
            change_notes=body.change_notes,
        )
        return prompt_settings.document_with_settings(session, name, mode)

    document = await asyncio.to_thread(_in_transaction, request.app[ENGINE], work)
    log.info("prompt created", extra={"prompt": name, "via": "http"})
    return web.json_response(document, status=201, headers={"Location": f"/prompts/{name}"})


async def list_prompts(request: web.Request) -> web.Response:
    read_query(request, NoQuery)
    summaries = await asyncio.to_thread(
        _in_transaction, request.app[ENGINE], prompts.prompt_summaries
    )
    return web.json_response({"prompts": [s.to_dict() for s in summaries]})


async def show_prompt(request: web.Request) -> web.Response:
    name, mode = _name(request), _mode(request)
    document = await asyncio.to_thread(
        _in_transaction,
        request.app[ENGINE],
        lambda s: prompt_settings.document_with_settings(s, name, mode),
    )
    return web.json_response(document)


async def change_settings(request: web.Request) -> web.Response:
    name, mode = _name(request), _mode(request)
    body = await read_body(request, prompt_settings.PromptSettingsBody)

    def work(session: Session) -> prompt_settings.PromptSettings:
        return prompt_settings.update_settings(session, name, body, mode)

    changed = await asyncio.to_thread(_in_transaction, request.app[ENGINE], work)
    log.info(
        "prompt settings changed",
        extra={"prompt": name, "settings": sorted(body.model_fields_set), "via": "http"},
    )
    return web.json_response(changed.to_dict())


async def add_version(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_body(request, NewVersionBody)

    def work(session: Session) -> prompts.VersionView:
        return prompts.add_version(
            session, name, body.content, change_notes=body.change_notes, now=utcnow()
        )

    version = await asyncio.to_thread(_in_transaction, request.app[ENGINE], work)
    log.info(
        "prompt version added", extra={"prompt": name, "version": version.number, "via": "http"}
    )
    return web.json_response(
        version.to_dict(), status=201, headers={"Location": f"/prompts/{name}"}
    )


async def rollback(request: web.Request) -> web.Response:
    name = _name(request)
    body = await read_body(request, RollbackBody)
    mode = _mode(request)

    def work(session: Session) -> dict[str, Any]:
        prompts.rollback(
            session, name, body.version, actor=HTTP_ACTOR, reason=body.reason, now=utcnow()
        )
        return prompt_settings.document_with_settings(session, name, mode)

    document = await asyncio.to_thread(_in_transaction, request.app[ENGINE], work)
    log.info("prompt rolled back", extra={"prompt": name, "version": body.version, "via": "http"})
    return web.json_response(document)


_PROMPT = Reply(
    "the prompt with every version, the activation history and its settings", out.PromptDocument
)
_NO_PROMPT = Reply("no prompt with this name")
ENDPOINTS = (
    Endpoint(
        "POST",
        "/prompts",
        create_prompt,
        "Create a prompt",
        auth="admin",
        body=NewPromptBody,
        description="Version 1 is active at once.",
        replies={
            201: Reply(_PROMPT.description, out.PromptDocument, headers=("Location",)),
            409: Reply("a prompt with this name exists"),
        },
    ),
    Endpoint(
        "GET",
        "/prompts",
        list_prompts,
        "List prompts",
        auth="admin",
        query=NoQuery,
        replies={200: Reply("every prompt, without its texts", out.PromptList)},
    ),
    Endpoint(
        "GET",
        "/prompts/{name}",
        show_prompt,
        "One prompt",
        auth="admin",
        replies={200: _PROMPT, 404: _NO_PROMPT},
    ),
    Endpoint(
        "POST",
        "/prompts/{name}/versions",
        add_version,
        "Add a version",
        auth="admin",
        body=NewVersionBody,
        description="It gets the next number and status candidate.",
        replies={
            201: Reply("the new version", out.Version, headers=("Location",)),
            404: _NO_PROMPT,
            409: Reply("a version of the prompt already has exactly this text"),
        },
    ),
    Endpoint(
        "POST",
        "/prompts/{name}/rollback",
        rollback,
        "Make a version active again",
        auth="admin",
        body=RollbackBody,
        description="The previously active version becomes retired.",
        replies={
            200: _PROMPT,
            404: Reply("no such prompt or version"),
            409: Reply(
                "the version is already active, or the prompt has a live experiment (stop it first)"
            ),
        },
    ),
    Endpoint(
        "POST",
        "/prompts/{name}/settings",
        change_settings,
        "Change a prompt's settings",
        auth="admin",
        body=prompt_settings.PromptSettingsBody,
        description="Only the keys given change: `promotion_mode` (`approve`: a winning "
        "variant waits for a person's approval; `auto`: it becomes active at once; null "
        "or `inherit`: follow PROMOTION_MODE) and `judge_rubric` (text the replay judge "
        "adds to its criteria for this prompt's candidates; null removes it). An empty "
        "body is a 400.",
        replies={
            200: Reply("the prompt's settings, with the mode in effect", out.PromptSettings),
            404: _NO_PROMPT,
        },
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
