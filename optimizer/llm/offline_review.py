"""The offline provider's replay and judge: a SIMULATION, deterministic, no model behind it.

The demo (optimizer/demo) and the tests that set LLM_PROVIDER=offline need replay and the
pairwise judge to behave like Claude would on the demo's world, without the API. So this
module holds the simulation's idea of what serves a segment well, and the offline
generator (optimizer.llm.offline) writes its variants with the same vocabulary:

- a prompt *guides* a segment when it holds the generator's guidance paragraph for it (the
  segment's steps and its name): replayed answers for that segment are step by step;
- a prompt *harms* a segment when it holds the generator's shortcut for it ("For shipping
  questions, keep answers to one sentence and skip tracking details."): answers for that
  segment are one curt sentence, whatever else the prompt says;
- otherwise answers are general.

The replayed answer says which of the three it is, and for which segment and prompt
(`[offline replay]`); the judge reads the two arms' answers, prefers the better kind, and
errs on a fixed small share of comparisons chosen by a hash (`[offline judge]`), so the
replay gate is tested against a judge that is good, not perfect. The demo world's hidden
truth (optimizer/demo/world.py) rates prompts with the same two tests, so what the judge
prefers is what users would prefer, up to its errors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

REPLAY_PREFIX = "[offline replay]"
JUDGE_PREFIX = "[offline judge]"
MAX_TITLE_CHARS = 120

# What good handling of a segment looks like, for the segments the demo knows; any other
# segment gets the generic steps.
SEGMENT_STEPS = {
    "billing": "confirm the account, quote the exact amounts and dates from the invoice, "
    "explain each charge plainly, and say what happens next",
    "shipping": "give the carrier status and the expected delivery date, and say what the "
    "customer can do if it is late",
    "returns": "state the return window and conditions, then list the exact steps to "
    "send the item back and when the refund arrives",
    "account": "verify who you are talking to, walk through the fix step by step, and "
    "confirm the customer can get in again",
}
GENERIC_STEPS = (
    "find out exactly what the user needs, answer with specific facts rather "
    "than general statements, and say what happens next"
)
# Plausible-looking shortcuts a generator may slip in for a segment it was not asked
# about: they read like concision and cost that segment the details its users need.
SHORTCUTS = {
    "billing": "For billing questions, keep answers to one sentence and skip the invoice details.",
    "shipping": "For shipping questions, keep answers to one sentence and skip tracking details.",
    "returns": "For returns questions, keep answers to one sentence and skip the return "
    "conditions.",
    "account": "For account questions, keep answers to one sentence and skip the "
    "verification steps.",
}

# How good a replayed answer is for its conversation's segment.
HARMED, PLAIN, GUIDED = 0, 1, 2
ANSWERS = {
    GUIDED: "A step-by-step answer to this {segment} question: {steps}.",
    PLAIN: "A general answer to this {segment} question, without specifics.",
    HARMED: "A one-sentence answer to this {segment} question that skips the details.",
}
KIND_WORDS = {GUIDED: "step-by-step", PLAIN: "general", HARMED: "one-sentence"}
NO_SEGMENT_ANSWER = "A general answer."

# The judge's mistakes, as shares of the comparisons (one conversation's two sets of
# answers; the same in both orders, as a real judge's misreading of a conversation is):
# when one set is better it prefers the worse one in FLIP_SHARE of them and calls a tie in
# MISS_SHARE more; when they are alike it picks answer A in POSITION_SHARE of them (a
# position bias, which judging in both orders turns into a tie).
FLIP_SHARE = 0.05
MISS_SHARE = 0.05
POSITION_SHARE = 0.10

# Untrusted text must not add placeholders or tags to a prompt.
_UNSAFE = re.compile(r"[{}<>]")


def clean(text: str) -> str:
    """Segment and tag names come from logged conversations: keep only what a reader
    sees, without braces or angle brackets, cut to MAX_TITLE_CHARS."""
    text = "".join(char if char.isprintable() else " " for char in text)
    text = " ".join(_UNSAFE.sub("", text).split())
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


def steps_for(segment: str) -> str:
    return SEGMENT_STEPS.get(segment.lower(), GENERIC_STEPS)


def unit_hash(*parts: str) -> float:
    """A number in [0, 1) fixed by the parts: the simulation's only source of chance."""
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def has_guidance(prompt: str, segment: str | None) -> bool:
    """Whether the prompt holds a guidance paragraph of the offline generator for the
    segment: the segment's steps (the generic ones for a segment the demo does not know)
    and its name."""
    if segment is None or not clean(segment):
        return False
    value = clean(segment)
    return steps_for(value) in prompt and value.lower() in prompt.lower()


def has_shortcut(prompt: str, segment: str | None) -> bool:
    """Whether the prompt holds the harmful shortcut for the segment."""
    if segment is None:
        return False
    shortcut = SHORTCUTS.get(clean(segment).lower())
    return shortcut is not None and shortcut in prompt


def guided_segments(prompt: str) -> list[str]:
    """The demo's segments the prompt has the offline generator's guidance for."""
    return [segment for segment in SEGMENT_STEPS if has_guidance(prompt, segment)]


def harmed_segments(prompt: str) -> list[str]:
    """The demo's segments the prompt holds a shortcut for."""
    return [segment for segment in SHORTCUTS if has_shortcut(prompt, segment)]


def answer_kind(prompt: str, segment: str | None) -> int:
    """HARMED, PLAIN or GUIDED: how the prompt serves the segment. A shortcut wins over
    guidance: the curt instruction is the one the answers follow."""
    if has_shortcut(prompt, segment):
        return HARMED
    if has_guidance(prompt, segment):
        return GUIDED
    return PLAIN


def replay_reply(system_prompt: str, segment: str | None, turn: int = 0) -> str:
    """The simulated answer to one user turn under `system_prompt`. It names its prompt by
    a short hash, as real answers under two prompts differ in their words."""
    tag = f"(user turn {turn + 1}, prompt {unit_hash(system_prompt):.6f})"
    if segment is None or not clean(segment):
        return f"{REPLAY_PREFIX} {NO_SEGMENT_ANSWER} {tag}"
    value = clean(segment)
    kind = answer_kind(system_prompt, value)
    text = ANSWERS[kind].format(segment=value, steps=steps_for(value))
    return f"{REPLAY_PREFIX} {text} {tag}"


def kind_of_answer(answer: str) -> int:
    """What the judge reads in an answer: the kind it was written as; PLAIN for any text
    the simulation did not write."""
    for kind in (GUIDED, HARMED):
        opening = ANSWERS[kind].split("{segment}")[0]
        if answer.startswith(f"{REPLAY_PREFIX} {opening}"):
            return kind
    return PLAIN


def judge_reply(
    answers_a: Sequence[str],
    answers_b: Sequence[str],
    conversation_id: int,
    segment: str | None,
) -> str:
    """Prefers the set of answers of the better kind (step by step over general over one
    sentence), with the mistakes described at FLIP_SHARE."""
    score_a = sum(kind_of_answer(a) for a in answers_a) / max(len(answers_a), 1)
    score_b = sum(kind_of_answer(b) for b in answers_b) / max(len(answers_b), 1)
    chance = unit_hash(str(conversation_id), *sorted(["\n".join(answers_a), "\n".join(answers_b)]))
    where = f" for this {clean(segment)} conversation" if segment and clean(segment) else ""
    if score_a == score_b:
        if chance < POSITION_SHARE:
            return _verdict("A", f"the answers are alike{where}; A reads slightly better")
        return _verdict("tie", f"both answers are {_words(score_a)}{where}")
    better, worse = ("A", "B") if score_a > score_b else ("B", "A")
    best, least = max(score_a, score_b), min(score_a, score_b)
    if chance < FLIP_SHARE:
        return _verdict(worse, f"answer {worse} is more to the point{where}")
    if chance < FLIP_SHARE + MISS_SHARE:
        return _verdict("tie", f"neither answer is clearly better{where}")
    return _verdict(
        better, f"answer {better} is {_words(best)} where the other is {_words(least)}{where}"
    )


def _words(score: float) -> str:
    return KIND_WORDS[round(score)]


def _verdict(choice: str, why: str) -> str:
    return f"<reason>{JUDGE_PREFIX} {why}.</reason>\n<verdict>{choice}</verdict>"
