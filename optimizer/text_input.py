"""Text from outside (HTTP bodies, path and query parameters, CLI arguments, job payloads,
imports): the one place that decides whether a string can be stored and queried, and how
a bad one is described.

PostgreSQL text cannot hold NUL, and a lone surrogate (the JSON escape "\\ud800" on its own)
cannot be encoded as UTF-8 for either database. Both are refused before any query, on both
databases alike, instead of surfacing as a database error: a 500 over HTTP, or a job retried
as if the failure were temporary.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from optimizer.errors import InvalidInput

NUL_PROBLEM = "contains a NUL character (\\u0000), which cannot be stored; remove it"
SURROGATE_PROBLEM = (
    "contains a lone surrogate (invalid Unicode, such as \\ud800 without its "
    "pair); send valid UTF-8 text"
)
# Keys shown as they are in a path; any other key is shown escaped (repr), so a path that
# names a NUL or a surrogate can itself be stored and sent back safely.
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,60}")


def unstorable(text: str) -> str | None:
    """Why `text` cannot be stored, worded to follow the field's name; None when it can."""
    if "\x00" in text:
        return NUL_PROBLEM
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return SURROGATE_PROBLEM
    return None


def refuse_unstorable(text: str, field: str) -> str:
    problem = unstorable(text)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}", field=field)
    return text


def text_problem(value: Any, max_chars: int, *, allow_blank: bool = False) -> str | None:
    """Why `value` is not a usable string of at most `max_chars` characters, worded to follow
    the field's name ("unit_id is empty"); None when it is."""
    if not isinstance(value, str):
        return f"must be a string; got {kind_of(value)}"
    if not allow_blank:
        if not value:
            return "is empty"
        if not value.strip():
            return "is blank (only white space)"
    if len(value) > max_chars:
        return f"is {len(value):,} characters; at most {max_chars:,}"
    return unstorable(value)


def check_text(value: Any, field: str, max_chars: int, *, allow_blank: bool = False) -> str:
    problem = text_problem(value, max_chars, allow_blank=allow_blank)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}", field=field)
    return str(value)


def first_unstorable(document: Any, root: str = "") -> tuple[str, str] | None:
    """The first string in a JSON document (a key or a value, in document order) that cannot
    be stored: (its path, such as payload.guardrails[0].metric, and the problem)."""
    stack: list[tuple[str, Any]] = [(root, document)]
    while stack:
        where, item = stack.pop()
        if isinstance(item, str):
            problem = unstorable(item)
            if problem is not None:
                return where or "value", problem
        elif isinstance(item, dict):
            children = []
            for key, child in item.items():
                path = _key_path(where, key)
                if isinstance(key, str) and (problem := unstorable(key)) is not None:
                    return path, f"is a key that {problem}"
                children.append((path, child))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            stack.extend(reversed([(f"{where}[{i}]", child) for i, child in enumerate(item)]))
    return None


def refuse_unstorable_in(document: Any, root: str = "") -> None:
    found = first_unstorable(document, root)
    if found is not None:
        raise InvalidInput(f"{found[0]} {found[1]}", field=found[0])


def _key_path(where: str, key: Any) -> str:
    if isinstance(key, str) and _PLAIN_KEY.fullmatch(key):
        return f"{where}.{key}" if where else key
    return f"{where}[{str(key)[:60]!r}]"


def kind_of(value: Any) -> str:
    """What a decoded JSON value is, for messages: "got a number"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def shown(value: Any) -> str:
    """A value as an error message shows it: short, and a huge integer by its size (repr
    of one past Python's digit limit raises, and nobody wants 400 digits echoed)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 99:
        sign = "a negative" if value < 0 else "a"
        try:
            return f"{sign} whole number of {len(str(abs(value)))} digits"
        except ValueError:  # past the digit limit: estimated from the bits
            digits = round(value.bit_length() * math.log10(2))
            return f"{sign} whole number of about {digits} digits"
    try:
        text = repr(value)
    except ValueError:  # a container holding an integer past the digit limit
        return f"a {type(value).__name__} holding a huge whole number"
    return text if len(text) <= 60 else text[:57] + "..."


MAX_ID = 2**63 - 1  # a BIGINT key


def parse_whole(raw: str, field: str, low: int, high: int, *, what: str | None = None) -> int:
    """A whole number typed as text (a CLI argument, a query or path parameter, a setting)
    between `low` and `high`: plain ASCII digits (str.isdigit also takes "²", which int()
    refuses), no sign, no more digits than `high` has, so a huge value is never converted."""
    text = raw.strip()
    if (
        text.isascii()
        and text.isdigit()
        and len(text.lstrip("0")) <= len(str(high))
        and low <= int(text) <= high
    ):
        return int(text)
    usage = what or f"a whole number from {low} to {high}"
    raise InvalidInput(f"{field} must be {usage}; got {shown(raw)}", field=field)


def parse_id(raw: str, field: str = "id") -> int:
    """A positive 64-bit id typed as text; anything else is refused before the database."""
    return parse_whole(raw, field, 1, MAX_ID, what="a positive whole number")


# Plain decimal notation: what people type for a weight, a confidence or a count of hours.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def parse_decimal(raw: str, field: str, *, what: str = "a number") -> float:
    """A finite number typed as text, in plain ASCII decimal notation ("0.95", "24", "1e-3"):
    not "nan", "inf", "1_000" or "٣" (all of which float() takes). Range checks are the
    caller's, as for a number received in JSON."""
    text = raw.strip()
    if not _DECIMAL.fullmatch(text):
        raise InvalidInput(f"{field} must be {what}; got {shown(raw)}", field=field)
    value = float(text)
    if not math.isfinite(value):
        raise InvalidInput(f"{field} is too large; got {shown(raw)}", field=field)
    return value


def parse_timestamp(value: Any, field_name: str) -> datetime:
    """ISO 8601; a time without an offset is taken as UTC."""
    if not isinstance(value, str):
        raise InvalidInput(
            f"{field_name} must be an ISO 8601 date-time string; got {shown(value)}",
            field=field_name,
        )
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        if not (text.isascii() and text.isprintable()):
            # fromisoformat stops reading at a NUL: "...00:00\x00" would pass as a time.
            raise ValueError("not printable ASCII")
        parsed = datetime.fromisoformat(text)
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset past year 1 or 9999
        raise InvalidInput(
            f"{field_name} is not an ISO 8601 date-time (e.g. 2026-11-22T09:00:00Z): "
            f"{value[:60]!r}",
            field=field_name,
        ) from None
