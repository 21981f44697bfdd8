"""Reading request bodies and query strings into plain values, or a 400 that says why."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from aiohttp import web

from optimizer import strict_json
from optimizer.errors import InvalidInput
from optimizer.text_input import (
    kind_of,
    parse_id,
    parse_whole,
    refuse_unstorable,
    refuse_unstorable_in,
)


def parse_json_document(raw: bytes) -> Any:
    if not raw.strip():
        raise InvalidInput("request body is empty; send a JSON object")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"request body is not UTF-8 (byte {exc.start}); send UTF-8 JSON"
                           ) from None
    try:
        return strict_json.loads(text)
    except strict_json.JsonRejected as exc:
        raise InvalidInput(f"request body is {exc}") from None


async def read_json_object(request: web.Request, allowed: Iterable[str]) -> dict[str, Any]:
    """The body as a JSON object whose keys are all in `allowed`.

    An oversized body raises aiohttp's HTTPRequestEntityTooLarge, which the error
    middleware answers as a 413."""
    value = parse_json_document(await request.read())
    if not isinstance(value, dict):
        raise InvalidInput(f"request body must be a JSON object, got {kind_of(value)}")
    reject_unknown(value, allowed, what="field")
    # Every string of the document, however deep (a job's payload, a guardrail), before any
    # of it reaches a query: NUL and lone surrogates are a 400 naming where they are.
    refuse_unstorable_in(value)
    return value


def reject_unknown(given: Iterable[str], allowed: Iterable[str], *, what: str) -> None:
    """A misspelt name silently ignored is worse than a 400 that names it."""
    known = tuple(allowed)
    for name in given:
        if name not in known:
            raise InvalidInput(f"unknown {what} {name!r}; allowed: {', '.join(known)}",
                               field=name)


def query_text(query: Mapping[str, str], name: str) -> str | None:
    """A text query parameter, or None when absent; NUL (%00) is refused by name."""
    raw = query.get(name)
    return None if raw is None else refuse_unstorable(raw, name)


def query_int(query: Mapping[str, str], name: str, *, default: int, minimum: int,
              maximum: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    return parse_whole(raw, name, minimum, maximum)


def path_id(request: web.Request, name: str = "id") -> int:
    """A positive 64-bit id from the URL; anything else is a 400, never a database error."""
    return parse_id(request.match_info[name], name)

