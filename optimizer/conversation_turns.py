"""The turns of a logged conversation, for replay. Pure.

A conversation carries a structured transcript (`messages`: a JSON list of {"role",
"content"}, stored as ingest checked it) and/or a text `transcript`. Replay needs the user
turns: from `messages` when present, else from a text transcript whose lines start with a
speaker ("user:", "assistant:", and the usual synonyms); a line without one continues the
turn before it. When neither gives a user turn with text, `turns_of` says why in words a
person can act on.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

ROLES = ("user", "assistant", "system", "tool")
# Speakers a text transcript may name, and the role each stands for.
_SPEAKERS = {
    "user": "user",
    "human": "user",
    "customer": "user",
    "client": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "bot": "assistant",
    "agent": "assistant",
    "system": "system",
}
# ASCII: under Unicode case folding "ſystem:" and "aİ:" would match, and name no speaker.
_SPEAKER_LINE = re.compile(
    r"^\s*(" + "|".join(_SPEAKERS) + r")\s*:\s?(.*)$", re.IGNORECASE | re.ASCII
)


@dataclass(frozen=True)
class Turn:
    role: str  # one of ROLES
    content: str


@dataclass(frozen=True)
class Unusable:
    reason: str


def turns_of(messages: str | None, transcript: str | None) -> list[Turn] | Unusable:
    """The conversation's turns (at least one user turn with text), or why there are none."""
    if messages is not None:
        turns = _from_messages(messages)
        if isinstance(turns, Unusable) or _has_user_turn(turns):
            return turns
        return Unusable("its messages hold no user turn with text")
    if transcript is None or not transcript.strip():
        return Unusable("it has neither messages nor a transcript (both were left out or erased)")
    turns = _from_text(transcript)
    if not _has_user_turn(turns):
        return Unusable(
            "its text transcript has no line starting with 'user:' (or 'human:', "
            "'customer:'); send the structured `messages` to make it replayable"
        )
    return turns


def user_turns(turns: list[Turn]) -> list[str]:
    return [turn.content for turn in turns if turn.role == "user" and turn.content.strip()]


def _has_user_turn(turns: list[Turn]) -> bool:
    return bool(user_turns(turns))


def _from_messages(text: str) -> list[Turn] | Unusable:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):
        # ValueError: not JSON, or a number past int()'s digit limit; RecursionError: nested
        # too deep. Ingest stores neither: the row was edited by hand.
        return Unusable("its stored messages are not JSON (edited by hand?)")
    if not isinstance(data, list):
        return Unusable("its stored messages are not a list (edited by hand?)")
    turns: list[Turn] = []
    for item in data:
        if not isinstance(item, dict):
            return Unusable("an item of its stored messages is not an object")
        role, content = item.get("role"), item.get("content")
        if role not in ROLES or not isinstance(content, str):
            return Unusable("an item of its stored messages has no valid role and text content")
        turns.append(Turn(role, content))
    return turns


def _from_text(transcript: str) -> list[Turn]:
    turns: list[Turn] = []
    role: str | None = None
    lines: list[str] = []
    for line in transcript.splitlines():
        match = _SPEAKER_LINE.match(line)
        if match is None:
            if role is not None:
                lines.append(line)
            continue
        if role is not None:
            turns.append(Turn(role, "\n".join(lines).strip()))
        role, lines = _SPEAKERS[match.group(1).lower()], [match.group(2)]
    if role is not None:
        turns.append(Turn(role, "\n".join(lines).strip()))
    return turns
