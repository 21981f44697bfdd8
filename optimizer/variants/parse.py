"""Pull the proposed prompts out of the model's reply. Pure: text in, variants out.

The reply is expected to hold N blocks `<improved_prompt>...</improved_prompt>`, each
followed by `<change_notes>...</change_notes>`. Prose around the blocks is ignored. The text
of a block is kept exactly as written except for its outer whitespace, so what gets stored
is what the model wrote.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PROMPT_TAG = "improved_prompt"
NOTES_TAG = "change_notes"

_OPEN = re.compile(rf"<{PROMPT_TAG}>", re.IGNORECASE)
_CLOSE = re.compile(rf"</{PROMPT_TAG}>", re.IGNORECASE)
_NOTES = re.compile(rf"<{NOTES_TAG}>(.*?)</{NOTES_TAG}>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True)
class ParsedVariant:
    content: str
    change_notes: str | None


def parse_variants(reply: str) -> list[ParsedVariant]:
    """Every complete `<improved_prompt>` block, in order, with the change notes that
    follow it (before the next block). An opening tag that is reopened before it is closed,
    or never closed, is garbled and yields nothing; the later, complete block wins."""
    blocks: list[tuple[int, int, int]] = []  # (content start, content end, after close)
    position = 0
    while (opening := _OPEN.search(reply, position)) is not None:
        closing = _CLOSE.search(reply, opening.end())
        if closing is None:
            break
        reopened = _last_open_before(reply, opening.end(), closing.start())
        start = reopened if reopened is not None else opening.end()
        blocks.append((start, closing.start(), closing.end()))
        position = closing.end()
    variants = []
    for start, end, after in blocks:
        # The notes belong to this block only if they come before the next opening tag.
        following = _OPEN.search(reply, after)
        limit = following.start() if following is not None else len(reply)
        variants.append(ParsedVariant(reply[start:end].strip(), _notes(reply, after, limit)))
    return variants


def _last_open_before(text: str, start: int, end: int) -> int | None:
    last = None
    for match in _OPEN.finditer(text, start, end):
        last = match.end()
    return last


def _notes(text: str, start: int, end: int) -> str | None:
    match = _NOTES.search(text, start, end)
    if match is None:
        return None
    notes = match.group(1).strip()
    return notes or None
