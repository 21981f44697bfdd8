"""Reading a request's body and query string into its model, or a 400 that says why.

Each route has one model per body and per query string (optimizer.http.requests, and the
experiment models in optimizer.experiments.validation), validated once here. Before the
model sees anything, the strict JSON reader refuses duplicate-key tricks, NaN tokens and
deep nesting, and every string of the document, however deep, is checked to be storable:
NUL and lone surrogates are a 400 naming where they are, before any of it reaches a query.
"""

from __future__ import annotations

from typing import Any, TypeVar

from aiohttp import web

from optimizer import strict_json
from optimizer.errors import InvalidInput
from optimizer.input_models import InputModel, validate
from optimizer.text_input import kind_of, parse_id, refuse_unstorable_in

Model = TypeVar("Model", bound=InputModel)


def parse_json_document(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidInput("request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(
            f"request body is not UTF-8 (byte {exc.start}); send UTF-8 JSON"
        ) from None
    try:
        return strict_json.loads(text)
    except strict_json.JsonRejected as exc:
        raise InvalidInput(f"request body is {exc}") from None


def body_as(model: type[Model], document: Any) -> Model:
    """A decoded JSON document as `model`: an object, storable text throughout."""
    if not isinstance(document, dict):
        raise InvalidInput(f"request body must be a JSON object, got {kind_of(document)}")
    refuse_unstorable_in(document)
    return validate(model, document)


async def read_body(request: web.Request, model: type[Model]) -> Model:
    """The body as `model`. An oversized body raises aiohttp's HTTPRequestEntityTooLarge,
    which the error middleware answers as a 413."""
    return body_as(model, parse_json_document(await request.read()))


async def read_optional_body(request: web.Request, model: type[Model]) -> Model:
    """As read_body, but an empty body stands for {} (every field of `model` optional)."""
    raw = await request.read()
    return validate(model, {}) if not raw.strip() else body_as(model, parse_json_document(raw))


def read_query(request: web.Request, model: type[Model]) -> Model:
    """The query string as `model` (its `noun` is "query parameter"). A name given twice
    counts once, with its first value."""
    query = {name: request.query.getone(name) for name in request.query}
    refuse_unstorable_in(query)
    return validate(model, query)


def path_id(request: web.Request, name: str = "id") -> int:
    """A positive 64-bit id from the URL; anything else is a 400, never a database error."""
    return parse_id(request.match_info[name], name)
