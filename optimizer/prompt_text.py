"""The rules of a prompt's name and text, pure: what prompts.py stores, what variant
validation checks a generated prompt against, and what a job payload's `prompt` must be."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from optimizer.errors import InvalidInput
from optimizer.text_input import kind_of

NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
MAX_NAME_CHARS = 200
MAX_CONTENT_CHARS = 100_000
MAX_NOTES_CHARS = 5_000
NAME_RULE = f"1 to {MAX_NAME_CHARS} characters of letters, digits, '.', '_' or '-'"


def content_hash(content: str) -> str:
    """sha256 hex of the exact text (no normalisation: whitespace changes are changes)."""
    return hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()


def name_problem(name: str) -> str | None:
    """Why `name` cannot name a prompt, worded to follow the field's name; None when it can."""
    if NAME_RE.fullmatch(name):
        return None
    shown = name if len(name) <= 60 else name[:57] + "..."
    return f"must be {NAME_RULE}; got {shown!r}"


def validate_name(name: Any, field: str = "name") -> str:
    if not isinstance(name, str):
        raise InvalidInput(f"{field} must be a string, got {kind_of(name)}", field=field)
    problem = name_problem(name)
    if problem is not None:
        raise InvalidInput(f"{field} {problem}", field=field)
    return name
