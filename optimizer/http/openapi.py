"""GET /openapi.json: the OpenAPI 3.1 document of every route the app registered, built from
the endpoints (optimizer.http.endpoints) and their pydantic models, so it cannot drift from
what the handlers accept and answer.

Like /health it needs no token: it describes the API, it holds nothing secret, and a client
generator or a person must be able to read it before they have a token.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from optimizer.http import responses as out
from optimizer.http.endpoints import REGISTERED, Endpoint, Reply, register
from optimizer.http.requests import NewJobBody
from optimizer.http.signing import SIGNATURE_HEADER, TIMESTAMP_HEADER
from optimizer.jobs.registry import SPECS
from optimizer.prompt_text import NAME_RE, NAME_RULE
from optimizer.prompts import MAX_VERSION
from optimizer.text_input import MAX_ID

REF = "#/components/schemas/{model}"
DOCUMENT = web.AppKey("openapi_document", dict[str, Any])
Mode = Literal["validation", "serialization"]
# What models_json_schema answers: a {"$ref": ...} per (model, mode).
Refs = Mapping[Any, dict[str, Any]]

SECURITY_SCHEMES = {
    "admin": (
        "adminToken",
        "ADMIN_TOKEN",
        "The admin API: jobs, prompts, experiments, "
        "insights. While ADMIN_TOKEN is not set, these routes answer 503.",
    ),
    "ingest": (
        "ingestToken",
        "INGEST_TOKEN",
        "The application API: resolve and "
        "conversations. The admin token does not open it. While INGEST_TOKEN is not "
        "set, these routes answer 503.",
    ),
}
PATH_PARAMETERS = {
    "id": (
        {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID},
        "the id: a positive whole number",
    ),
    "name": (
        {"type": "string", "pattern": f"^{NAME_RE.pattern}$"},
        f"the prompt's name: {NAME_RULE}",
    ),
    "version": (
        {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
        "the version number: a positive whole number",
    ),
}
SIGNATURE_PARAMETERS = {
    "signatureTimestamp": {
        "name": TIMESTAMP_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"},
        "description": "Only when ADMIN_HMAC_SECRET is set (then required): the request's "
        "time in unix seconds, within the allowed window of the server's "
        "clock.",
    },
    "signature": {
        "name": SIGNATURE_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"},
        "description": "Only when ADMIN_HMAC_SECRET is set (then required): sha256=<hex "
        'HMAC-SHA256(secret, f"{timestamp}.{METHOD}.{path_qs}." + body)>, '
        "path_qs being the request target as sent. Each signature is "
        "accepted once.",
    },
}
HEADERS = {
    "ETag": "the version of the answer; send it back in If-None-Match",
    "Location": "where the new resource can be read",
    "Retry-After": "seconds to wait before trying again",
    "WWW-Authenticate": "Bearer",
}
DESCRIPTION = """\
Improves an LLM application's system prompts with A/B experiments.

Every error is JSON: `{"error": "what is wrong and what to do", "field": "run_at"}` (`field`
is null when no single field is at fault). Bad input gets a 4xx and writes nothing.

The admin API needs `Authorization: Bearer $ADMIN_TOKEN` (and, when ADMIN_HMAC_SECRET is
set, the X-Timestamp and X-Signature headers); the application API needs
`Authorization: Bearer $INGEST_TOKEN`. The probes, this document and /docs need no token.
"""


def _version() -> str:
    try:
        return importlib.metadata.version("prompt-worker")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "0.0.0"


def _tag(endpoint: Endpoint) -> str:
    if endpoint.auth == "ingest":
        return "Application API"
    if endpoint.auth == "admin":
        return "Admin API: " + endpoint.path.strip("/").split("/")[0]
    return "Probes and documentation"


def _replies(endpoint: Endpoint) -> dict[int, Reply]:
    """The endpoint's own answers, and the errors every route of its kind can give."""
    found: dict[int, Reply] = {}
    if endpoint.body is not None or endpoint.query is not None or "{" in endpoint.path:
        found[400] = Reply("bad input; the message names the field")
    if endpoint.auth is not None:
        _, variable, _ = SECURITY_SCHEMES[endpoint.auth]
        signed = (
            ", or a bad signature when ADMIN_HMAC_SECRET is set" if endpoint.auth == "admin" else ""
        )
        found[401] = Reply(f"a missing or wrong token{signed}", headers=("WWW-Authenticate",))
        found[503] = Reply(
            f"{variable} is not configured (the message names it), or the "
            "database is out (with Retry-After)",
            headers=("Retry-After",),
        )
    if endpoint.body is not None:
        found[413] = Reply("the body is larger than MAX_BODY_BYTES")
    found.update(endpoint.replies)
    return dict(sorted(found.items()))


def _models(endpoints: Iterable[Endpoint]) -> list[tuple[type[BaseModel], Mode]]:
    pairs: dict[tuple[type[BaseModel], Mode], None] = {}
    for endpoint in endpoints:
        if endpoint.body is not None:
            pairs[(endpoint.body, "validation")] = None
        for status, reply in _replies(endpoint).items():
            model = _reply_model(status, reply)
            if model is not None:
                pairs[(model, "serialization")] = None
    for spec in SPECS.values():  # named by the payload-by-type rule of POST /jobs
        pairs[(spec.payload, "validation")] = None
    return list(pairs)


def _reply_model(status: int, reply: Reply) -> type[BaseModel] | None:
    if reply.model is None and status >= 400 and reply.media_type == "application/json":
        return out.Error
    return reply.model


def _not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """A query parameter is absent or text, never null: `X | None` is X there."""
    options = [o for o in schema.get("anyOf", ()) if o != {"type": "null"}]
    if len(options) != 1:
        return schema
    rest = {k: v for k, v in schema.items() if k != "anyOf" and not (k == "default" and v is None)}
    return {**options[0], **rest}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    schema = model.model_json_schema(ref_template=REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema.get("properties", {}).items():
        prop = _not_null({k: v for k, v in prop.items() if k != "title"})
        description = prop.pop("description", "")
        parameters.append(
            {
                "name": name,
                "in": "query",
                "required": name in required,
                "description": description,
                "schema": prop,
            }
        )
    return parameters


def _parameters(endpoint: Endpoint) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name, (schema, description) in PATH_PARAMETERS.items():
        if "{" + name + "}" in endpoint.path:
            parameters.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "description": description,
                    "schema": schema,
                }
            )
    if endpoint.query is not None:
        parameters += _query_parameters(endpoint.query)
    parameters += [dict(header) for header in endpoint.headers]
    if endpoint.auth == "admin":
        parameters += [{"$ref": f"#/components/parameters/{key}"} for key in SIGNATURE_PARAMETERS]
    return parameters


def _content(reply: Reply, schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        schema = {"type": "string" if reply.media_type.startswith("text/") else "object"}
    return {reply.media_type: {"schema": schema}}


def _operation(endpoint: Endpoint, refs: Refs) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": endpoint.handler.__name__,
        "summary": endpoint.summary,
        "tags": [_tag(endpoint)],
        "security": (
            [{SECURITY_SCHEMES[endpoint.auth][0]: []}] if endpoint.auth is not None else []
        ),
    }
    if endpoint.description:
        operation["description"] = endpoint.description
    parameters = _parameters(endpoint)
    if parameters:
        operation["parameters"] = parameters
    if endpoint.body is not None:
        operation["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": refs[(endpoint.body, "validation")]}},
        }
    responses: dict[str, Any] = {}
    for status, reply in _replies(endpoint).items():
        model = _reply_model(status, reply)
        answer: dict[str, Any] = {"description": reply.description}
        if reply.media_type:  # "" for an answer with no body (304)
            answer["content"] = _content(
                reply, refs[(model, "serialization")] if model is not None else None
            )
        if reply.headers:
            answer["headers"] = {
                name: {"description": HEADERS[name], "schema": {"type": "string"}}
                for name in reply.headers
            }
        responses[str(status)] = answer
    operation["responses"] = responses
    return operation


def _payload_by_type(schemas: dict[str, Any], refs: Refs) -> None:
    """POST /jobs: which payload goes with which `type`, exactly (JSON Schema's if/then on
    the sibling field): the payload property alone can only say "one of them"."""
    body = schemas[NewJobBody.__name__]
    body["allOf"] = [
        {
            "if": {"properties": {"type": {"const": name}}, "required": ["type"]},
            "then": {
                "properties": {
                    "payload": {
                        "anyOf": [
                            refs[(spec.payload, "validation")],
                            {"type": "string"},
                            {"type": "null"},
                        ]
                    }
                }
            },
        }
        for name, spec in SPECS.items()
    ]


def build_document(endpoints: Sequence[Endpoint]) -> dict[str, Any]:
    refs, definitions = models_json_schema(_models(endpoints), ref_template=REF)
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    if any(e.body is NewJobBody for e in endpoints):
        _payload_by_type(schemas, refs)
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "prompt-worker", "version": _version(), "description": DESCRIPTION},
        "tags": [{"name": name} for name in dict.fromkeys(_tag(e) for e in endpoints)],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": SIGNATURE_PARAMETERS,
            "securitySchemes": {
                key: {
                    "type": "http",
                    "scheme": "bearer",
                    "description": f"`Authorization: Bearer ${variable}`. {about}",
                }
                for key, variable, about in SECURITY_SCHEMES.values()
            },
        },
    }


def document_of(app: web.Application) -> dict[str, Any]:
    """The app's document, built once: the routes do not change after start-up."""
    cache = app[DOCUMENT]
    if not cache:
        endpoints: list[Endpoint] = app[REGISTERED]
        cache.update(build_document(endpoints))
    return cache


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(document_of(request.app))


ENDPOINTS = (
    Endpoint(
        "GET",
        "/openapi.json",
        openapi,
        "This API as an OpenAPI 3.1 document",
        replies={200: Reply("the document")},
    ),
)


def add_routes(app: web.Application) -> None:
    app[DOCUMENT] = {}
    register(app, ENDPOINTS)
