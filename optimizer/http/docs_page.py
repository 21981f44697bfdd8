"""GET /docs: the OpenAPI document as one readable HTML page, rendered on the server.

No script and nothing fetched from elsewhere: a page of tables (each route with its token,
parameters, body and answers; then every schema) built from /openapi.json itself, every
text escaped. Like the document, it needs no token.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from optimizer.http.endpoints import Endpoint, Reply, register
from optimizer.http.openapi import document_of

SCHEMA_PREFIX = "#/components/schemas/"
_STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; max-width: 68rem; margin: 2rem auto;
       padding: 0 1rem; color: #1b1b1b; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2rem; margin-top: 2.5rem; }
h3 { margin: 1.6rem 0 .3rem; font-size: 1.05rem; }
code, .path { font-family: ui-monospace, monospace; font-size: .92em; }
.method { display: inline-block; min-width: 3.6rem; font-weight: bold; }
table { border-collapse: collapse; margin: .3rem 0 .8rem; width: 100%; }
th, td { border: 1px solid #ddd; padding: .25rem .45rem; text-align: left;
         vertical-align: top; }
th { background: #f4f4f4; }
.auth { color: #8a3b00; }
nav li { list-style: none; }
"""

_CONSTRAINTS = (
    ("minimum", ">= {}"),
    ("exclusiveMinimum", "> {}"),
    ("maximum", "<= {}"),
    ("exclusiveMaximum", "< {}"),
    ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"),
    ("minItems", "at least {} items"),
    ("maxItems", "at most {} items"),
    ("pattern", "matches {}"),
    ("format", "{}"),
    ("default", "default {}"),
)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _anchor(kind: str, text: str) -> str:
    """A fragment id from any text: escaped characters would not survive as an id."""
    return kind + "-" + "".join(c if c.isalnum() else "-" for c in text).strip("-")


def _ref_name(ref: str) -> str:
    return ref[len(SCHEMA_PREFIX) :] if ref.startswith(SCHEMA_PREFIX) else ref


def type_text(schema: Mapping[str, Any]) -> str:
    """A schema in a few words, as HTML: `integer (>= 1)`, `array of Job`, a link for a
    named schema."""
    if "$ref" in schema:
        name = _ref_name(str(schema["$ref"]))
        return f'<a href="#{_anchor("schema", name)}">{_e(name)}</a>'
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return " or ".join(type_text(option) for option in schema[key])
    if "const" in schema:
        return f"<code>{_e(json.dumps(schema['const']))}</code>"
    if "enum" in schema:
        return "one of " + ", ".join(f"<code>{_e(v)}</code>" for v in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        text = "array of " + type_text(schema.get("items", {}))
    elif (
        kind == "object"
        and "additionalProperties" in schema
        and isinstance(schema["additionalProperties"], dict)
    ):
        text = "object of " + type_text(schema["additionalProperties"])
    else:
        text = _e(kind) if kind else "any"
    limits = [
        template.format(_e(json.dumps(schema[key]) if key == "default" else schema[key]))
        for key, template in _CONSTRAINTS
        if key in schema
    ]
    return text + (f" ({'; '.join(limits)})" if limits else "")


def _fields_table(schema: Mapping[str, Any]) -> str:
    properties = schema.get("properties")
    if not properties:
        return f"<p>{type_text(schema)}</p>"
    required = set(schema.get("required", ()))
    rows = "".join(
        f"<tr><td><code>{_e(name)}</code></td><td>{'yes' if name in required else ''}</td>"
        f"<td>{type_text(prop)}</td><td>{_e(prop.get('description', ''))}</td></tr>"
        for name, prop in properties.items()
    )
    extra = (
        ""
        if schema.get("additionalProperties") is not False
        else "<p>Any other field is refused.</p>"
    )
    return (
        "<table><tr><th>Field</th><th>Required</th><th>Type</th><th>Meaning</th></tr>"
        f"{rows}</table>{extra}"
    )


def _parameters_table(
    parameters: Iterable[Mapping[str, Any]], components: Mapping[str, Any]
) -> str:
    rows = []
    for parameter in parameters:
        if "$ref" in parameter:
            parameter = components["parameters"][str(parameter["$ref"]).rsplit("/", 1)[-1]]
        rows.append(
            f"<tr><td><code>{_e(parameter['name'])}</code></td>"
            f"<td>{_e(parameter['in'])}</td>"
            f"<td>{'yes' if parameter.get('required') else ''}</td>"
            f"<td>{type_text(parameter.get('schema', {}))}</td>"
            f"<td>{_e(parameter.get('description', ''))}</td></tr>"
        )
    if not rows:
        return ""
    return (
        "<table><tr><th>Parameter</th><th>In</th><th>Required</th><th>Type</th>"
        f"<th>Meaning</th></tr>{''.join(rows)}</table>"
    )


def _responses_table(responses: Mapping[str, Any]) -> str:
    rows = []
    for status, answer in responses.items():
        bodies = ", ".join(
            f"{type_text(media.get('schema', {}))} <code>{_e(kind)}</code>"
            for kind, media in answer.get("content", {}).items()
        )
        headers = ", ".join(f"<code>{_e(h)}</code>" for h in answer.get("headers", {}))
        rows.append(
            f"<tr><td>{_e(status)}</td><td>{_e(answer['description'])}</td>"
            f"<td>{bodies}</td><td>{headers}</td></tr>"
        )
    return (
        "<table><tr><th>Status</th><th>When</th><th>Body</th><th>Headers</th></tr>"
        f"{''.join(rows)}</table>"
    )


def _auth_text(operation: Mapping[str, Any], schemes: Mapping[str, Any]) -> str:
    names = [name for requirement in operation.get("security", []) for name in requirement]
    if not names:
        return "No token."
    return " ".join(_e(schemes[name]["description"]) for name in names)


def _operation_html(
    path: str, method: str, operation: Mapping[str, Any], components: Mapping[str, Any]
) -> str:
    parts = [
        f'<h3 id="{_anchor("op", operation["operationId"])}">'
        f'<span class="method">{_e(method.upper())}</span> '
        f'<span class="path">{_e(path)}</span> &mdash; {_e(operation["summary"])}</h3>',
        f'<p class="auth">{_auth_text(operation, components["securitySchemes"])}</p>',
    ]
    if operation.get("description"):
        parts.append(f"<p>{_e(operation['description'])}</p>")
    parts.append(_parameters_table(operation.get("parameters", ()), components))
    body = operation.get("requestBody")
    if body is not None:
        schema = body["content"]["application/json"]["schema"]
        optional = "" if body.get("required") else " (optional)"
        parts.append(f"<p>Body{optional}: {type_text(schema)}</p>")
    parts.append(_responses_table(operation["responses"]))
    return "\n".join(part for part in parts if part)


def render(document: Mapping[str, Any]) -> str:
    components = document["components"]
    by_tag: dict[str, list[str]] = {}
    contents: dict[str, list[str]] = {}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            tag = operation["tags"][0]
            by_tag.setdefault(tag, []).append(_operation_html(path, method, operation, components))
            contents.setdefault(tag, []).append(
                f'<a href="#{_anchor("op", operation["operationId"])}">{_e(method.upper())} '
                f"{_e(path)}</a>"
            )
    sections = [
        f'<h2 id="{_anchor("tag", tag)}">{_e(tag)}</h2>\n' + "\n".join(items)
        for tag, items in by_tag.items()
    ]
    schemas = [
        f'<h3 id="{_anchor("schema", name)}">{_e(name)}</h3>'
        + (f"<p>{_e(schema['description'])}</p>" if schema.get("description") else "")
        + _fields_table(schema)
        for name, schema in components["schemas"].items()
    ]
    nav = "".join(
        f"<li><strong>{_e(tag)}</strong>: {' · '.join(links)}</li>"
        for tag, links in contents.items()
    )
    info = document["info"]
    description = "".join(
        f"<p>{_e(paragraph)}</p>" for paragraph in info.get("description", "").split("\n\n")
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(info['title'])} API</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(info['title'])} API <small>{_e(info['version'])}</small></h1>"
        f'{description}<p>The same as <a href="/openapi.json">/openapi.json</a> '
        f"(OpenAPI {_e(document['openapi'])}).</p><nav><ul>{nav}</ul></nav>"
        + "\n".join(sections)
        + '<h2 id="schemas">Schemas</h2>'
        + "\n".join(schemas)
        + "</body></html>\n"
    )


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=render(document_of(request.app)), content_type="text/html")


ENDPOINTS = (
    Endpoint(
        "GET",
        "/docs",
        docs,
        "This API as a page to read",
        replies={200: Reply("the page", media_type="text/html")},
    ),
)


def add_routes(app: web.Application) -> None:
    register(app, ENDPOINTS)
