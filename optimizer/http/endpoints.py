"""Each route of the app as one Endpoint: its handler, its guard, its request models and its
answers. Registering an endpoint adds the route and records it for the OpenAPI document, so
a route cannot exist without its description, and the token a route is documented to need
is the one its guard checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel

from optimizer.http.auth import Handler, admin_only, ingest_only
from optimizer.input_models import InputModel

Auth = Literal["admin", "ingest"]
_GUARDS = {"admin": admin_only, "ingest": ingest_only}


@dataclass(frozen=True)
class Reply:
    """One possible answer: what it means, and its body (a model, or a media type with no
    schema: text, HTML)."""

    description: str
    model: type[BaseModel] | None = None
    media_type: str = "application/json"
    headers: Sequence[str] = ()  # response headers worth naming: Location, Retry-After


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # aiohttp's template: /jobs/{id}
    handler: Handler
    summary: str
    replies: Mapping[int, Reply]  # the route's own answers; the common errors are added
    auth: Auth | None = None
    body: type[BaseModel] | None = None
    body_required: bool = True
    query: type[InputModel] | None = None
    description: str = ""
    headers: Sequence[Mapping[str, Any]] = ()  # request headers, as OpenAPI parameter objects


REGISTERED = web.AppKey("registered_endpoints", list[Endpoint])


def register(app: web.Application, endpoints: Sequence[Endpoint]) -> None:
    """Add each endpoint's route, behind its guard, and remember it for the document."""
    if REGISTERED not in app:
        app[REGISTERED] = []
    for endpoint in endpoints:
        handler = endpoint.handler
        if endpoint.auth is not None:
            handler = _GUARDS[endpoint.auth](handler)
        if endpoint.method == "GET":  # and HEAD, as aiohttp's add_get does
            app.router.add_get(endpoint.path, handler)
        else:
            app.router.add_route(endpoint.method, endpoint.path, handler)
        app[REGISTERED].append(endpoint)
