"""The offline provider's replay and judge: deterministic, labelled, and preferring the
answer whose prompt has the offline generator's guidance for the conversation's segment."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from optimizer.conversation_turns import Turn
from optimizer.llm.client import LlmRequest
from optimizer.llm.offline import (
    JUDGE_PREFIX,
    REPLAY_PREFIX,
    SEGMENT_STEPS,
    has_guidance,
    respond,
    variants_reply,
)
from optimizer.replay.requests import JudgedConversation, judge_request, replay_points
from optimizer.replay.verdict import parse_verdict

PROMPT = "You are the support assistant."
SEGMENTS = st.sampled_from([*SEGMENT_STEPS, "Billing", "refunds", "vip customers"])


def improved(segment: str, index: int = 1) -> str:
    insight = {"title": f"{segment} fails", "evidence": {"dimension": "segment", "value": segment}}
    reply = variants_reply(PROMPT, [insight], index)
    return re.findall(r"<improved_prompt>\n(.*?)\n</improved_prompt>", reply, re.S)[-1]


def judged(segment: str | None, first: str, candidate: str, control: str) -> str:
    points = tuple(replay_points([Turn("user", "help me")], 1))
    request = judge_request(
        model="sonnet",
        criteria="General: be right.",
        conversation=JudgedConversation(1, segment, points),
        first=first,
        answers={"candidate": ["a"], "control": ["b"]},
        prompts={"candidate": candidate, "control": control},
        job_id=None,
    )
    return respond(request)


@given(segment=SEGMENTS, index=st.integers(1, 12), first=st.sampled_from(["candidate", "control"]))
def test_the_judge_prefers_the_prompt_with_guidance_for_the_segment(segment, index, first):
    candidate = improved(segment, index)
    assert has_guidance(candidate, segment) and not has_guidance(PROMPT, segment)
    verdict = parse_verdict(judged(segment, first, candidate, PROMPT))
    assert verdict.choice == ("A" if first == "candidate" else "B")
    assert verdict.reason.startswith(JUDGE_PREFIX)


@given(segment=SEGMENTS, other=SEGMENTS, first=st.sampled_from(["candidate", "control"]))
def test_the_judge_ties_when_the_guidance_is_for_another_segment(segment, other, first):
    if segment.lower() == other.lower():
        return
    verdict = parse_verdict(judged(other, first, improved(segment), PROMPT))
    assert verdict.choice == "tie"


def test_the_judge_ties_without_a_segment_and_when_both_have_guidance():
    assert parse_verdict(judged(None, "candidate", improved("billing"), PROMPT)).choice == "tie"
    both = parse_verdict(judged("billing", "control", improved("billing"), improved("billing", 2)))
    assert both.choice == "tie" and "both prompts" in both.reason


def test_a_replayed_answer_says_which_guidance_its_prompt_has():
    def answer(system: str) -> str:
        return respond(
            LlmRequest(
                purpose="replay",
                model="sonnet",
                system=system,
                user="hi",
                context={"system_prompt": system},
            )
        )

    assert answer(improved("billing")) == f"{REPLAY_PREFIX} An answer under a prompt with " + (
        "guidance for: billing."
    )
    assert answer(PROMPT).endswith("guidance for: no segment.")
    assert answer(improved("billing")) == answer(improved("billing"))
