"""The rules a proposed prompt must pass before it is stored. Pure.

A variant is dropped when it is
- empty (nothing but whitespace);
- not storable text (a NUL character or an unpaired surrogate);
- longer than `length_limit(active)`: at most max(2 x the active prompt's length, the
  active length + LENGTH_SLACK_CHARS) characters, and never more than MAX_CONTENT_CHARS
  (the limit on any stored version);
- missing a template placeholder of the active prompt, or adding one the active prompt does
  not have (the host application fills exactly the placeholders it knows; a dropped one
  loses data, a new one reaches users as literal braces). Placeholders are compared as
  written, so `{{ name }}` and `{{name}}` differ;
- identical (same content hash) to an existing version of the prompt, or to an earlier
  variant of the same batch.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from optimizer.prompt_text import MAX_CONTENT_CHARS, MAX_NOTES_CHARS, content_hash
from optimizer.text_input import unstorable
from optimizer.variants.parse import ParsedVariant

LENGTH_FACTOR = 2
LENGTH_SLACK_CHARS = 4000
PLACEHOLDER_RE = re.compile(r"\{\{\s*[A-Za-z_][A-Za-z0-9_.\-]*\s*\}\}")


@dataclass(frozen=True)
class ValidVariant:
    index: int  # 1-based position in the model's reply
    content: str
    change_notes: str | None


@dataclass(frozen=True)
class DroppedVariant:
    index: int
    reason: str

    def to_dict(self) -> dict[str, object]:
        return {"index": self.index, "reason": self.reason}


def length_limit(active: str) -> int:
    return min(
        MAX_CONTENT_CHARS, max(LENGTH_FACTOR * len(active), len(active) + LENGTH_SLACK_CHARS)
    )


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER_RE.findall(text))


# Bidirectional embeddings, overrides and isolates reorder how text is shown, so a prompt
# can read one way to a reviewer and another to the model.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def hidden_characters(content: str) -> str | None:
    """Why the text holds a character nobody reviewing it would see (a control character
    other than tab and line breaks, or a bidi control); None when it holds none. Text from
    conversations reaches generated prompts, so this is where it is stopped."""
    for char in content:
        if (unicodedata.category(char) == "Cc" and char not in "\t\n\r") or char in _BIDI_CONTROLS:
            return (
                f"contains the invisible character U+{ord(char):04X}; a prompt must "
                "show what it says"
            )
    return None


def check_variant(content: str, active: str) -> str | None:
    """Why this text cannot replace `active`, or None when it can (duplicates aside)."""
    if not content.strip():
        return "empty: the block held no text"
    problem = unstorable(content) or hidden_characters(content)
    if problem is not None:
        return problem
    limit = length_limit(active)
    if len(content) > limit:
        return f"too long: {len(content)} characters, at most {limit} allowed"
    wanted, found = placeholders(active), placeholders(content)
    if wanted - found:
        return "drops placeholder(s) " + ", ".join(sorted(wanted - found))
    if found - wanted:
        return (
            "adds placeholder(s) "
            + ", ".join(sorted(found - wanted))
            + " that the active prompt does not have"
        )
    return None


def validate_variants(
    variants: Sequence[ParsedVariant], active: str, existing_hashes: Mapping[str, int]
) -> tuple[list[ValidVariant], list[DroppedVariant]]:
    """Split the batch into the variants to store and the ones dropped with the reason.
    `existing_hashes` maps the content hash of each version of the prompt to its number."""
    valid: list[ValidVariant] = []
    dropped: list[DroppedVariant] = []
    seen: dict[str, int] = {}
    for index, variant in enumerate(variants, start=1):
        reason = check_variant(variant.content, active)
        digest = content_hash(variant.content) if reason is None else ""
        if reason is None and digest in existing_hashes:
            reason = f"identical to version {existing_hashes[digest]}"
        elif reason is None and digest in seen:
            reason = f"identical to variant {seen[digest]} of this reply"
        if reason is not None:
            dropped.append(DroppedVariant(index, reason))
            continue
        seen[digest] = index
        valid.append(ValidVariant(index, variant.content, clean_notes(variant.change_notes)))
    return valid, dropped


def clean_notes(notes: str | None) -> str | None:
    """Change notes are informative only: make them storable instead of dropping the
    variant for them."""
    if notes is None:
        return None
    notes = notes.replace("\x00", "").encode("utf-8", "replace").decode("utf-8").strip()
    if len(notes) > MAX_NOTES_CHARS:
        notes = notes[: MAX_NOTES_CHARS - 1].rstrip() + "…"
    return notes or None
