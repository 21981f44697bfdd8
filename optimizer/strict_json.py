"""JSON as we accept it from outside: finite numbers, bounded nesting, clear reasons."""

from __future__ import annotations

import json
from typing import Any, NoReturn

# Deeper nesting than any real document; stops recursion limits being hit further down
# (encoding, storing, handlers) after the input was accepted.
MAX_JSON_DEPTH = 64


class JsonRejected(ValueError):
    """The text is not JSON we accept; the message says why."""


def _reject_constant(name: str) -> NoReturn:
    raise JsonRejected(f"{name} is not valid JSON; use null or a finite number")


def is_too_deep(value: Any) -> bool:
    """Iterative, so a hostile document cannot exhaust the stack here either."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return False


def loads(text: str) -> Any:
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise JsonRejected(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except RecursionError:
        raise JsonRejected(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:  # NaN/Infinity, or an integer past Python's digit limit
        raise JsonRejected(str(exc)) from None
    check(value)
    return value


def check(value: Any) -> None:
    """A value built in Python (not parsed by `loads`) held to the same rules."""
    if is_too_deep(value):
        raise JsonRejected(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise JsonRejected(f"cannot be stored as JSON: {exc}") from None
