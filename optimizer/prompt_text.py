"""The rules of a prompt's name and text, pure: what prompts.py stores, what variant
validation checks a generated prompt against, and what a job payload's `prompt` must be."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
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


# --- protected sections ------------------------------------------------------------------
#
# Parts of a prompt that must never change (legal text, a tool schema, a persona's name) are
# marked in its stored content as `[[protected]]` ... `[[/protected]]` (docs/candidates.md
# "Protected sections"). The markers are exact and case-sensitive; sections are not nested,
# and each holds some text. The markers belong to the stored content (the admin API, the CLI
# and the dashboard show them) and never to what is served (`served_text`).

OPEN_MARKER = "[[protected]]"
CLOSE_MARKER = "[[/protected]]"
_MARKER = re.compile(r"\[\[/?protected\]\]")
# What an admin may have meant as a marker: any case, spaces inside the brackets.
_NEAR_MARKER = re.compile(r"\[\[\s*/?\s*protected\s*\]\]", re.IGNORECASE)


@dataclass(frozen=True)
class ProtectedSection:
    text: str  # exactly what lies between the two markers
    start: int  # offset of the opening marker in the content
    end: int  # offset just past the closing marker
    line: int  # 1-based line of the opening marker


def markup_problem(content: str) -> str | None:
    """The first thing wrong with the text's protected-section markers, naming its line;
    None when they are well formed (or absent)."""
    if "[[" not in content:
        return None
    for match in _NEAR_MARKER.finditer(content):
        if match.group() not in (OPEN_MARKER, CLOSE_MARKER):
            return (
                f"line {_line(content, match.start())}: {match.group()!r} is not a "
                f"protected-section marker; write exactly {OPEN_MARKER} and {CLOSE_MARKER} "
                "(lower case, no spaces)"
            )
    problem = _pairing_problem(content)
    if problem is not None:
        return problem
    for number, line in enumerate(content.split("\n"), start=1):
        # Removing markers only ever joins text within a line.
        joined = _MARKER.search(_MARKER.sub("", line))
        if joined is not None:
            return (
                f"line {number}: removing the markers would join the text around them into "
                f"a new {joined.group()}; put a space between a marker and the brackets "
                "next to it"
            )
    return None


def _pairing_problem(content: str) -> str | None:
    opened: re.Match[str] | None = None
    for match in _MARKER.finditer(content):
        line = _line(content, match.start())
        if match.group() == OPEN_MARKER:
            if opened is not None:
                return (
                    f"line {line}: {OPEN_MARKER} opens a section inside the one opened on "
                    f"line {_line(content, opened.start())}; sections cannot be nested, so "
                    f"close the first with {CLOSE_MARKER} before opening another"
                )
            opened = match
            continue
        if opened is None:
            return f"line {line}: {CLOSE_MARKER} closes no section (no {OPEN_MARKER} is open)"
        if not content[opened.end() : match.start()].strip():
            return (
                f"line {_line(content, opened.start())}: the protected section opened here "
                f"is empty (nothing but white space before its {CLOSE_MARKER}); put the text "
                "to protect between the markers or remove them"
            )
        opened = None
    if opened is not None:
        return (
            f"line {_line(content, opened.start())}: {OPEN_MARKER} is never closed; end "
            f"the section with {CLOSE_MARKER}"
        )
    return None


def check_markup(content: str, field: str = "content") -> str:
    """`content` itself, or InvalidInput naming the first malformed marker and its line."""
    problem = markup_problem(content)
    if problem is not None:
        raise InvalidInput(f"{field} has malformed protected-section markers: {problem}", field)
    return content


def sections(content: str) -> list[ProtectedSection]:
    """The protected sections in order; InvalidInput when the markers are malformed."""
    check_markup(content)
    found: list[ProtectedSection] = []
    opening: re.Match[str] | None = None
    for match in _MARKER.finditer(content):
        if match.group() == OPEN_MARKER:
            opening = match
        elif opening is not None:
            found.append(
                ProtectedSection(
                    text=content[opening.end() : match.start()],
                    start=opening.start(),
                    end=match.end(),
                    line=_line(content, opening.start()),
                )
            )
            opening = None
    return found


def protected_sections(content: str) -> list[str]:
    """The exact text inside each pair of markers, in order; InvalidInput when the markers
    are malformed."""
    return [section.text for section in sections(content)]


def served_text(content: str) -> str:
    """The text without its markers: what resolve, /v1/config, the SDK and replay use.

    A line holding nothing but markers and white space is removed with its line break (so
    markers written on lines of their own leave no blank line behind); anywhere else a
    marker is removed alone, and the text around it stays as written. Every marker goes,
    even from text whose markers are malformed (stored before they were checked), so
    none is ever served."""
    if "[[" not in content:
        return content
    kept = []
    for line in content.split("\n"):
        bare = _without_markers(line)
        if bare != line and not bare.strip():
            continue
        kept.append(bare)
    return "\n".join(kept)


def _without_markers(line: str) -> str:
    # Repeated because removing one marker can join its neighbours into another
    # ("[[pro[[protected]]tected]]"): check_markup refuses such text, but rows stored
    # before the check or edited by hand must not serve a marker either.
    while (bare := _MARKER.sub("", line)) != line:
        line = bare
    return line


def _line(content: str, offset: int) -> int:
    return content.count("\n", 0, offset) + 1
