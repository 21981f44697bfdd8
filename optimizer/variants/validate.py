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
- not keeping the active prompt's protected sections (`[[protected]]` ... `[[/protected]]`,
  docs/candidates.md "Protected sections"): see `protected_problem` for exactly what is
  enforced;
- identical (same content hash) to an existing version of the prompt, or to an earlier
  variant of the same batch.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from optimizer.errors import InvalidInput
from optimizer.prompt_text import (
    MAX_CONTENT_CHARS,
    MAX_NOTES_CHARS,
    ProtectedSection,
    content_hash,
    markup_problem,
    sections,
)
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
    return protected_problem(content, active)


EXCERPT_CHARS = 40


def protected_problem(content: str, active: str) -> str | None:
    """Why `content` does not keep the active prompt's protected sections; None when it does.

    Enforced, in this order (the first broken rule is the reason):
    1. the variant's markers are well formed (prompt_text.markup_problem);
    2. every section of the active prompt is in the variant, unaltered, and the variant has
       no other: a section's text is compared character for character, apart from white
       space at its two ends (which serving does not show either);
    3. the sections keep their order;
    4. they keep their place: a section that begins the active prompt (nothing but white
       space before its opening marker) begins the variant, one that ends it ends the
       variant, and two sections with nothing but white space between them still have
       nothing between them. Text may otherwise be added, removed or changed anywhere
       around the sections."""
    try:
        wanted = sections(active)
    except InvalidInput as exc:
        # Only a version stored before markers were checked, or edited by hand, gets here.
        return f"cannot check protected sections: the active prompt's {exc}"
    problem = markup_problem(content)
    if problem is not None:
        return f"protected-section markers are malformed: {problem}"
    found = sections(content)
    return (
        _missing_or_added(wanted, found)
        or _reordered(wanted, found)
        or _moved(wanted, active, found, content)
    )


def _core(section: ProtectedSection) -> str:
    return section.text.strip()


def _excerpt(section: ProtectedSection) -> str:
    text = " ".join(_core(section).split())
    return repr(text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 1] + "…")


def _missing_or_added(
    wanted: Sequence[ProtectedSection], found: Sequence[ProtectedSection]
) -> str | None:
    want, have = [_core(s) for s in wanted], [_core(s) for s in found]
    if Counter(want) == Counter(have):
        return None  # the same sections, perhaps reordered
    if len(want) == len(have):
        # As many sections as before: each kept its place, and the first that differs
        # was changed.
        i = next(i for i, (a, b) in enumerate(zip(want, have, strict=True)) if a != b)
        return f"protected section {i + 1} ({_excerpt(wanted[i])}) was changed"
    # Some were dropped or added: aligned as a diff aligns lines, so the section named is
    # the one a reader would pick, repeated texts included.
    matcher = SequenceMatcher(None, want, have, autojunk=False)
    for tag, i1, _, j1, _ in matcher.get_opcodes():
        if tag == "replace":
            return f"protected section {i1 + 1} ({_excerpt(wanted[i1])}) was changed"
        if tag == "delete":
            return f"protected section {i1 + 1} ({_excerpt(wanted[i1])}) was dropped"
        if tag == "insert":
            return (
                f"adds protected section {j1 + 1} ({_excerpt(found[j1])}), which the active "
                "prompt does not have"
            )
    return None


def _reordered(wanted: Sequence[ProtectedSection], found: Sequence[ProtectedSection]) -> str | None:
    for number, (want, have) in enumerate(zip(wanted, found, strict=True), start=1):
        if _core(want) != _core(have):
            return (
                f"protected section {number} ({_excerpt(want)}) was moved: the protected "
                f"sections were reordered ({_excerpt(have)} is now section {number})"
            )
    return None


def _moved(
    wanted: Sequence[ProtectedSection],
    active: str,
    found: Sequence[ProtectedSection],
    content: str,
) -> str | None:
    if not wanted:
        return None
    last = len(wanted) - 1
    if _begins(active, wanted[0]) and not _begins(content, found[0]):
        return (
            f"protected section 1 ({_excerpt(wanted[0])}) was moved: it begins the "
            "active prompt and must begin the variant too"
        )
    if _ends(active, wanted[last]) and not _ends(content, found[last]):
        return (
            f"protected section {last + 1} ({_excerpt(wanted[last])}) was moved: it ends "
            "the active prompt and must end the variant too"
        )
    for i in range(1, len(wanted)):
        together = not active[wanted[i - 1].end : wanted[i].start].strip()
        if together and content[found[i - 1].end : found[i].start].strip():
            return (
                f"protected section {i + 1} ({_excerpt(wanted[i])}) was moved: it directly "
                f"follows section {i} in the active prompt and must still follow it with "
                "nothing but white space between"
            )
    return None


def _begins(text: str, section: ProtectedSection) -> bool:
    return not text[: section.start].strip()


def _ends(text: str, section: ProtectedSection) -> bool:
    return not text[section.end :].strip()


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
