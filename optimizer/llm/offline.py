"""The offline stand-in for Claude: deterministic, no network, clearly labelled.

Used by `prompt-worker demo` and by tests that set LLM_PROVIDER=offline, so the whole loop
(insights -> variants -> replay -> experiment -> promotion) runs without an API key. It does
not write like a model: each variant is the active prompt (so every placeholder and
protected section survives) plus guidance paragraphs built from the structured insights in
`request.context`, placed before a protected section that ends the prompt; its change notes
say "[offline generator]". It records an `llm_calls` row (provider "offline", cost 0) like
the real client, but the hourly limit and the budget do not apply to it.

Like a real model it is not always right: about HARM_SHARE of its variants (chosen by a
hash of the variant) also carry a plausible-looking shortcut for a segment it was not asked
about (optimizer.llm.offline_review.SHORTCUTS), which the demo world's users pay for. A
variant asked about a segment drops the shortcut the active prompt holds for it.

Replay and judging are simulated in optimizer.llm.offline_review.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from optimizer.llm import usage
from optimizer.llm.client import LlmError, LlmReply, LlmRequest
from optimizer.llm.offline_review import (
    GENERIC_STEPS,
    SHORTCUTS,
    clean,
    judge_reply,
    replay_reply,
    steps_for,
    unit_hash,
)
from optimizer.prompt_text import markup_problem, sections

PROVIDER = "offline"
MODEL = "offline"
NOTES_PREFIX = "[offline generator]"
MAX_INSIGHTS = 5
HARM_SHARE = 0.5

# Variants differ in how the guidance is framed and how it closes, so their hashes differ.
OPENERS = (
    "When the conversation is about {value}: {steps}.",
    "For {value} questions, be thorough: {steps}.",
    "If the user asks about {value}, first restate the question in one sentence, then {steps}.",
    "Treat {value} requests with extra care: {steps}; never send the user elsewhere "
    "without answering.",
)
CLOSERS = (
    "",
    "Keep every answer short and concrete.",
    "Before you finish, check that the user's question has been fully answered.",
)
NO_INSIGHT_GUIDANCE = (
    "Answer the user's actual question directly and specifically.",
    "Be concise: lead with the answer, then the details that matter.",
    "If a request is unclear, ask one short clarifying question before answering.",
    "State what you can and cannot do, and what the user should do next.",
)


class OfflineClient:
    provider = PROVIDER

    def __init__(self, sessions: sessionmaker[Session], clock: Callable[[], datetime]) -> None:
        self._sessions, self._clock = sessions, clock

    async def complete(self, request: LlmRequest) -> LlmReply:
        started = time.monotonic()
        text = respond(request)
        call_id = await asyncio.to_thread(
            usage.record_call,
            self._sessions,
            usage.CallRecord(
                purpose=request.purpose,
                requested_model=request.model,
                model=MODEL,
                provider=PROVIDER,
                outcome="ok",
                created_at=self._clock(),
                job_id=request.job_id,
                latency_ms=round((time.monotonic() - started) * 1000.0, 1),
            ),
        )
        return LlmReply(
            text=text,
            provider=PROVIDER,
            requested_model=request.model,
            model=MODEL,
            fell_back=False,
            call_id=call_id,
        )


def respond(request: LlmRequest) -> str:
    """The reply text for a request. Pure and deterministic."""
    context = request.context
    if request.purpose == "variant_generation":
        return variants_reply(
            str(context.get("active_prompt") or ""),
            list(context.get("insights") or []),
            int(context.get("n") or 1),
        )
    if request.purpose == "failure_themes":
        return '{"themes": []}'
    if request.purpose == "replay":
        turn = context.get("turn")
        return replay_reply(
            str(context.get("system_prompt") or ""),
            _text_or_none(context.get("segment")),
            turn if isinstance(turn, int) else 0,
        )
    if request.purpose == "judge":
        conversation_id = context.get("conversation_id")
        return judge_reply(
            _texts(context.get("answers_a")),
            _texts(context.get("answers_b")),
            conversation_id if isinstance(conversation_id, int) else 0,
            _text_or_none(context.get("segment")),
        )
    raise LlmError(
        f"the offline generator cannot answer purpose {request.purpose!r}; "
        "set LLM_PROVIDER=anthropic and ANTHROPIC_API_KEY"
    )


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _texts(value: Any) -> list[str]:
    return [str(item) for item in value] if isinstance(value, list) else []


def variants_reply(active_prompt: str, insights: list[dict[str, Any]], n: int) -> str:
    used = insights[:MAX_INSIGHTS]
    titles = [clean(str(insight.get("title") or "untitled finding")) for insight in used]
    asked = [value.lower() for value in map(segment_value, used) if value is not None]
    base = without_shortcuts(active_prompt, asked)
    addressed = (
        "; ".join(titles) if titles else "no findings were given, so generic clarity guidance"
    )
    blocks = []
    for index in range(1, max(n, 1) + 1):
        guidance = _guidance(used, index)
        harmed = shortcut_target(base, guidance, asked)
        change = f"made {harmed} answers more concise; " if harmed is not None else ""
        if harmed is not None:
            guidance.append(SHORTCUTS[harmed])
        notes = f"{NOTES_PREFIX} Variant {index}: {change}added guidance for: {addressed}."
        content = insert_guidance(base, guidance)
        blocks.append(
            f"<improved_prompt>\n{content}\n</improved_prompt>\n"
            f"<change_notes>{notes}</change_notes>"
        )
    return "\n".join(blocks)


def shortcut_target(base: str, guidance: Sequence[str], asked: Sequence[str]) -> str | None:
    """The segment this variant slips a shortcut in for, if any: HARM_SHARE of variants,
    chosen by a hash of the variant, get one for a demo segment they were not asked about
    (and that has none yet)."""
    text = base + "\n" + "\n".join(guidance)
    if unit_hash("harm", text) >= HARM_SHARE:
        return None
    targets = [s for s in SHORTCUTS if s not in asked and SHORTCUTS[s] not in base]
    if not targets:
        return None
    return targets[int(unit_hash("target", text) * len(targets))]


def without_shortcuts(prompt: str, segments: Sequence[str]) -> str:
    """The prompt without its shortcut lines for the segments asked about (a model asked to
    fix a segment rewrites what holds it back); lines inside a protected section stay."""
    drop = {SHORTCUTS[s] for s in segments if s in SHORTCUTS}
    if not drop or not any(text in prompt for text in drop):
        return prompt
    spans = [] if markup_problem(prompt) else [(s.start, s.end) for s in sections(prompt)]
    kept, offset = [], 0
    for line in prompt.split("\n"):
        inside = any(start <= offset < end for start, end in spans)
        if inside or line.strip() not in drop:
            kept.append(line)
        offset += len(line) + 1
    return "\n".join(kept)


def insert_guidance(prompt: str, guidance: Sequence[str]) -> str:
    """The prompt with the guidance paragraphs added at its end, or, when protected
    sections end it, just before them (validation drops a variant that moves a section
    away from the end, or between two sections with nothing between them)."""
    paragraph = "\n".join(guidance)
    start = _trailing_sections_start(prompt)
    head = prompt[:start].rstrip() if start is not None else ""
    if start is None or not head:
        return prompt.rstrip() + "\n\n" + paragraph
    return f"{head}\n\n{paragraph}\n\n{prompt[start:]}"


def _trailing_sections_start(prompt: str) -> int | None:
    """Where the run of protected sections that ends the prompt begins; None when no
    section ends it (or the markers are malformed: appending is all that is safe)."""
    if markup_problem(prompt) is not None:
        return None
    found = sections(prompt)
    if not found or prompt[found[-1].end :].strip():
        return None
    index = len(found) - 1
    while index > 0 and not prompt[found[index - 1].end : found[index].start].strip():
        index -= 1
    return found[index].start


def _guidance(insights: list[dict[str, Any]], index: int) -> list[str]:
    opener = OPENERS[(index - 1) % len(OPENERS)]
    closer = CLOSERS[(index - 1) // len(OPENERS) % len(CLOSERS)]
    if insights:
        # Several findings about one segment (success and rating, 24 h and 7 days) make
        # the same paragraph; the prompt needs it once.
        lines = list(dict.fromkeys(_paragraph(insight, opener) for insight in insights))
    else:
        lines = [NO_INSIGHT_GUIDANCE[(index - 1 + i) % len(NO_INSIGHT_GUIDANCE)] for i in range(2)]
    if closer:
        lines.append(closer)
    if index > len(OPENERS) * len(CLOSERS):  # beyond the combinations: still distinct
        lines.append(f"(Revision {index}.)")
    return lines


def _paragraph(insight: dict[str, Any], opener: str) -> str:
    value = segment_value(insight)
    if value is None:
        title = clean(str(insight.get("title") or "a recorded finding"))
        return opener.format(value=f"the finding '{title}'", steps=GENERIC_STEPS)
    return opener.format(value=value, steps=steps_for(value))


def segment_value(insight: dict[str, Any]) -> str | None:
    """The segment a finding is about, from its evidence; None when it names none."""
    evidence = insight.get("evidence")
    if not isinstance(evidence, dict):
        return None
    for key in ("value", "segment", "segment_value"):
        value = evidence.get(key)
        if isinstance(value, str) and value.strip():
            cleaned = clean(value)
            return cleaned or None
    return None
