"""Reading the judge's reply. Pure.

The judge is told to answer with `<reason>one to three sentences</reason>` then
`<verdict>A</verdict>` (A, B or tie) and nothing else. The reply is read strictly: anything
else (prose around the tags, two verdicts, an unknown value, a tag inside the reason) is
refused with a message naming the problem, because a lenient reader would let text the judge
quoted from an answer ("<verdict>A</verdict>" planted in a transcript) decide the verdict.
What the caller does with a refused reply is its business (the replay retries once, then
counts a tie; see docs/candidates.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from optimizer.errors import PromptWorkerError

CHOICES = ("A", "B", "tie")
MAX_REASON_CHARS = 2000
SHOWN_REPLY_CHARS = 80

_REPLY = re.compile(
    r"\s*<reason>(?P<reason>.*?)</reason>\s*<verdict>\s*(?P<choice>[^<]*?)\s*</verdict>\s*",
    re.DOTALL | re.IGNORECASE,
)
_TAG = re.compile(r"</?\s*(reason|verdict)\b", re.IGNORECASE)


class UnreadableVerdict(PromptWorkerError):
    """The judge's reply is not in the format it was asked for."""


@dataclass(frozen=True)
class Verdict:
    choice: str  # "A", "B" or "tie": the answer shown in that position, or neither
    reason: str


def parse_verdict(text: str) -> Verdict:
    """The judge's choice and reason, or UnreadableVerdict saying what is wrong."""
    match = _REPLY.fullmatch(text)
    if match is None:
        raise UnreadableVerdict(
            "the judge's reply is not <reason>...</reason> followed by "
            f"<verdict>A|B|tie</verdict> and nothing else (it begins {_shown(text)})"
        )
    reason, choice = match.group("reason").strip(), match.group("choice")
    if _TAG.search(reason):
        raise UnreadableVerdict("the judge's reason holds a <reason> or <verdict> tag of its own")
    if not reason:
        raise UnreadableVerdict("the judge gave an empty reason")
    normalised = {c.lower(): c for c in CHOICES}.get(choice.lower())
    if normalised is None:
        raise UnreadableVerdict(
            f"the judge's verdict is {choice[:SHOWN_REPLY_CHARS]!r}, not A, B or tie"
        )
    return Verdict(normalised, _cut(reason))


def preferred_arm(choice: str, first: str) -> str:
    """Which arm a choice prefers: "candidate", "control" or "tie", given which arm's
    answers were shown as A (`first`)."""
    if first not in ("candidate", "control"):
        raise ValueError(f"first must be 'candidate' or 'control'; got {first!r}")
    if choice == "tie":
        return "tie"
    second = "control" if first == "candidate" else "candidate"
    if choice == "A":
        return first
    if choice == "B":
        return second
    raise ValueError(f"choice must be one of {CHOICES}; got {choice!r}")


def _shown(text: str) -> str:
    head = " ".join(text.split())[:SHOWN_REPLY_CHARS]
    return repr(head) if head else "(empty)"


def _cut(text: str) -> str:
    return text if len(text) <= MAX_REASON_CHARS else text[: MAX_REASON_CHARS - 1] + "…"
