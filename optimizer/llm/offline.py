"""The offline stand-in for Claude: deterministic, no network, clearly labelled.

Used by `prompt-worker demo` and by tests that set LLM_PROVIDER=offline, so the whole loop
(insights -> variants -> experiment -> promotion) runs without an API key. It does not write
like a model: each variant is the active prompt unchanged (so every placeholder survives)
plus guidance paragraphs built from the structured insights in `request.context`, and its
change notes say "[offline generator]". It records an `llm_calls` row (provider "offline",
cost 0) like the real client, but the hourly limit and the budget do not apply to it.

Replay and judging are simulated just as plainly: a replayed answer only says which segment
guidance its system prompt holds ("[offline replay]"), and the judge prefers the answer whose
prompt has guidance for the conversation's segment, a tie otherwise ("[offline judge]").
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from optimizer.llm import usage
from optimizer.llm.client import LlmError, LlmReply, LlmRequest

PROVIDER = "offline"
MODEL = "offline"
NOTES_PREFIX = "[offline generator]"
MAX_INSIGHTS = 5
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
# Untrusted text must not add placeholders or tags to a prompt.
_UNSAFE = re.compile(r"[{}<>]")


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
    if request.purpose == "variant_generation":
        context = request.context
        return variants_reply(
            str(context.get("active_prompt") or ""),
            list(context.get("insights") or []),
            int(context.get("n") or 1),
        )
    if request.purpose == "failure_themes":
        return '{"themes": []}'
    if request.purpose == "replay":
        return replay_reply(str(request.context.get("system_prompt") or ""))
    if request.purpose == "judge":
        context = request.context
        segment = context.get("segment")
        return judge_reply(
            str(context.get("prompt_a") or ""),
            str(context.get("prompt_b") or ""),
            segment if isinstance(segment, str) else None,
        )
    raise LlmError(
        f"the offline generator cannot answer purpose {request.purpose!r}; "
        "set LLM_PROVIDER=anthropic and ANTHROPIC_API_KEY"
    )


def variants_reply(active_prompt: str, insights: list[dict[str, Any]], n: int) -> str:
    used = insights[:MAX_INSIGHTS]
    titles = [_clean(str(insight.get("title") or "untitled finding")) for insight in used]
    blocks = []
    for index in range(1, max(n, 1) + 1):
        guidance = _guidance(used, index)
        content = active_prompt.rstrip() + "\n\n" + "\n".join(guidance)
        addressed = (
            "; ".join(titles) if titles else "no findings were given, so generic clarity guidance"
        )
        notes = f"{NOTES_PREFIX} Variant {index}: added guidance for: {addressed}."
        blocks.append(
            f"<improved_prompt>\n{content}\n</improved_prompt>\n"
            f"<change_notes>{notes}</change_notes>"
        )
    return "\n".join(blocks)


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
        title = _clean(str(insight.get("title") or "a recorded finding"))
        return opener.format(value=f"the finding '{title}'", steps=GENERIC_STEPS)
    steps = SEGMENT_STEPS.get(value.lower(), GENERIC_STEPS)
    return opener.format(value=value, steps=steps)


def segment_value(insight: dict[str, Any]) -> str | None:
    """The segment a finding is about, from its evidence; None when it names none."""
    evidence = insight.get("evidence")
    if not isinstance(evidence, dict):
        return None
    for key in ("value", "segment", "segment_value"):
        value = evidence.get(key)
        if isinstance(value, str) and value.strip():
            return _clean(value)
    return None


def _clean(text: str) -> str:
    # Segment and tag names come from logged conversations: keep only what a reader sees.
    text = "".join(char if char.isprintable() else " " for char in text)
    text = " ".join(_UNSAFE.sub("", text).split())
    return text if len(text) <= MAX_TITLE_CHARS else text[: MAX_TITLE_CHARS - 1] + "…"


REPLAY_PREFIX = "[offline replay]"
JUDGE_PREFIX = "[offline judge]"


def guided_segments(prompt: str) -> list[str]:
    """The demo's segments the prompt has the offline generator's guidance for."""
    return [segment for segment in SEGMENT_STEPS if has_guidance(prompt, segment)]


def has_guidance(prompt: str, segment: str | None) -> bool:
    """Whether the prompt holds a guidance paragraph of the offline generator for the
    segment: the segment's steps (the generic ones for a segment the demo does not know)
    and its name."""
    if segment is None or not _clean(segment):
        return False
    value = _clean(segment)
    steps = SEGMENT_STEPS.get(value.lower(), GENERIC_STEPS)
    return steps in prompt and value.lower() in prompt.lower()


def replay_reply(system_prompt: str) -> str:
    guided = guided_segments(system_prompt)
    which = ", ".join(guided) if guided else "no segment"
    return f"{REPLAY_PREFIX} An answer under a prompt with guidance for: {which}."


def judge_reply(prompt_a: str, prompt_b: str, segment: str | None) -> str:
    """Prefers the answer whose prompt has guidance for the segment; a tie when both or
    neither have it (or the conversation has no segment)."""
    a, b = has_guidance(prompt_a, segment), has_guidance(prompt_b, segment)
    verdict = "A" if a and not b else "B" if b and not a else "tie"
    if segment is None or not _clean(segment):
        why = "the conversation has no segment, so neither answer is preferred"
    elif verdict == "tie":
        both = "both prompts have" if a else "neither prompt has"
        why = f"{both} guidance for the segment {_clean(segment)!r}"
    else:
        why = f"only answer {verdict}'s prompt has guidance for the segment {_clean(segment)!r}"
    return f"<reason>{JUDGE_PREFIX} {why}.</reason>\n<verdict>{verdict}</verdict>"
