"""The offline provider's replay and judge (a simulation) against the demo world's hidden
truth: answers reflect the prompt's guidance and shortcuts for the conversation's segment,
the judge prefers the better answers except on a fixed small share of conversations, and
what it prefers is what the world's users would prefer."""

from __future__ import annotations

import re
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.conversation_turns import Turn
from optimizer.demo.world import (
    FIRST_PROMPT,
    PROBLEMS,
    SEGMENT_SHARES,
    expected_success_rate,
    true_success_rate,
)
from optimizer.llm.client import LlmRequest
from optimizer.llm.offline import respond, variants_reply
from optimizer.llm.offline_review import (
    FLIP_SHARE,
    GUIDED,
    HARMED,
    JUDGE_PREFIX,
    MISS_SHARE,
    PLAIN,
    POSITION_SHARE,
    REPLAY_PREFIX,
    SEGMENT_STEPS,
    SHORTCUTS,
    answer_kind,
    harmed_segments,
    has_guidance,
)
from optimizer.replay.requests import (
    JudgedConversation,
    judge_request,
    replay_points,
    replay_request,
)
from optimizer.replay.verdict import parse_verdict, preferred_arm
from optimizer.stats.win_rate import pair_score

PROMPT = "You are the support assistant."
DEMO_SEGMENTS = list(SEGMENT_STEPS)
SEGMENTS = st.sampled_from([*DEMO_SEGMENTS, "Billing", "refunds", "vip customers"])
TURNS = [Turn("user", "help me"), Turn("assistant", "sure"), Turn("user", "<script>x</script>")]
# Days of the world's story: before any later problem, and after each one opened.
DAYS = [0.0, *sorted({since for since, _ in PROBLEMS.values()}), 40.0]


def variants(prompt: str, segment: str, n: int = 3) -> list[str]:
    insight = {"title": f"{segment} fails", "evidence": {"dimension": "segment", "value": segment}}
    reply = variants_reply(prompt, [insight], n)
    return re.findall(r"<improved_prompt>\n(.*?)\n</improved_prompt>", reply, re.S)


def answers(prompt: str, segment: str | None, conversation_id: int = 1) -> list[str]:
    """The replayed answers to TURNS under `prompt`, through the real request builder."""
    return [
        respond(
            replay_request(
                model="sonnet",
                system=prompt,
                point=point,
                arm="candidate",
                segment=segment,
                conversation_id=conversation_id,
                job_id=None,
            )
        )
        for point in replay_points(TURNS, 2)
    ]


def preferences(
    candidate: str, control: str, segment: str | None, conversation_id: int
) -> tuple[str, str]:
    """The arm the judge prefers with the candidate's answers shown first, then with the
    control's, as the replay job asks it."""
    replies = {
        "candidate": answers(candidate, segment, conversation_id),
        "control": answers(control, segment, conversation_id),
    }
    points = tuple(replay_points(TURNS, 2))
    preferred = []
    for first in ("candidate", "control"):
        request = judge_request(
            model="sonnet",
            criteria="General: be right.",
            conversation=JudgedConversation(conversation_id, segment, points),
            first=first,
            answers=replies,
            prompts={"candidate": candidate, "control": control},
            job_id=None,
        )
        verdict = parse_verdict(respond(request))
        assert verdict.reason.startswith(JUDGE_PREFIX)
        preferred.append(preferred_arm(verdict.choice, first))
    return preferred[0], preferred[1]


def score(candidate: str, control: str, segment: str | None, conversation_id: int) -> float:
    return pair_score(*preferences(candidate, control, segment, conversation_id))


def clean_and_harmful(segment: str) -> tuple[str, str]:
    found = {bool(harmed_segments(v)): v for v in variants(PROMPT, segment, 12)}
    return found[False], found[True]


# --- replay --------------------------------------------------------------------------------


def test_a_replayed_answer_says_what_kind_of_answer_its_prompt_gives() -> None:
    clean, harmful = clean_and_harmful("billing")
    [harmed] = harmed_segments(harmful)
    assert answers(clean, "billing")[0].startswith(f"{REPLAY_PREFIX} A step-by-step answer")
    assert answers(PROMPT, "billing")[0].startswith(f"{REPLAY_PREFIX} A general answer")
    assert answers(harmful, harmed)[0].startswith(f"{REPLAY_PREFIX} A one-sentence answer")
    assert answers(PROMPT, None)[0].startswith(f"{REPLAY_PREFIX} A general answer.")
    assert answers(clean, "billing") == answers(clean, "billing")  # deterministic
    # Two prompts of one kind still write different words, one answer per user turn.
    first, second = answers(clean, "billing"), answers(variants(PROMPT, "billing")[1], "billing")
    assert first != second and len(first) == 2 and "user turn 2" in first[1]


def test_a_replay_request_without_context_still_gets_an_answer() -> None:
    request = LlmRequest(purpose="replay", model="sonnet", system="s", user="hi")
    assert respond(request).startswith(f"{REPLAY_PREFIX} A general answer.")


# --- the judge -----------------------------------------------------------------------------


@given(segment=SEGMENTS, index=st.integers(1, 12), conversation=st.integers(1, 10**6))
def test_the_judge_prefers_guidance_for_the_segment_or_errs_as_documented(
    segment: str, index: int, conversation: int
) -> None:
    candidate = variants(PROMPT, segment, index)[-1]
    assert has_guidance(candidate, segment) and not has_guidance(PROMPT, segment)
    # Right, or a miss (a tie) or a flip (the control), but the same in both orders: the
    # judge's mistakes are about the conversation, not the position.
    first, second = preferences(candidate, PROMPT, segment, conversation)
    assert first == second


def test_the_judge_errs_on_a_fixed_small_share_of_conversations() -> None:
    clean, _ = clean_and_harmful("shipping")
    scores = Counter(score(clean, PROMPT, "shipping", i) for i in range(1, 1201))
    shares = {s: count / 1200 for s, count in scores.items()}
    assert shares[0.0] == pytest.approx(FLIP_SHARE, abs=0.025)
    assert shares[0.5] == pytest.approx(MISS_SHARE, abs=0.025)
    # And the mistakes are the judge's, not chance: the same conversation, the same score.
    assert [score(clean, PROMPT, "shipping", i) for i in range(1, 40)] == [
        score(clean, PROMPT, "shipping", i) for i in range(1, 40)
    ]


def test_alike_answers_tie_whatever_the_position_bias() -> None:
    """For alike answers the judge picks A in POSITION_SHARE of conversations; judged in both
    orders that is a tie, never a win or a loss."""
    clean, _ = clean_and_harmful("billing")
    scores = Counter(score(clean, PROMPT, "returns", i) for i in range(1, 301))
    assert scores == Counter({0.5: 300})
    assert POSITION_SHARE > 0  # the bias exists, and cancels out


@given(segment=st.sampled_from(DEMO_SEGMENTS), conversation=st.integers(1, 10**6))
def test_a_shortcut_loses_on_its_segment_except_for_the_judge_s_mistakes(
    segment: str, conversation: int
) -> None:
    _, harmful = clean_and_harmful(segment)
    [harmed] = harmed_segments(harmful)
    first, second = preferences(harmful, PROMPT, harmed, conversation)
    assert first == second
    assert answer_kind(harmful, harmed) == HARMED and answer_kind(harmful, segment) == GUIDED


def test_a_shortcut_loses_on_its_segment_in_most_conversations() -> None:
    _, harmful = clean_and_harmful("billing")
    [harmed] = harmed_segments(harmful)
    scores = Counter(score(harmful, PROMPT, harmed, i) for i in range(1, 401))
    assert scores[0.0] / 400 >= 1 - FLIP_SHARE - MISS_SHARE - 0.03


def test_the_judge_says_why_in_the_words_of_the_answers() -> None:
    clean, _ = clean_and_harmful("account")
    replies = {"candidate": answers(clean, "account"), "control": answers(PROMPT, "account")}
    points = tuple(replay_points(TURNS, 2))
    right = [i for i in range(1, 40) if score(clean, PROMPT, "account", i) == 1.0]
    assert len(right) > 30
    for first, choice in (("candidate", "A"), ("control", "B")):
        request = judge_request(
            model="sonnet",
            criteria="c",
            conversation=JudgedConversation(right[0], "account", points),
            first=first,
            answers=replies,
            prompts={"candidate": clean, "control": PROMPT},
            job_id=None,
        )
        verdict = parse_verdict(respond(request))
        assert verdict.choice == choice
        assert f"answer {choice} is step-by-step where the other is general" in verdict.reason


# --- agreement with the world's hidden truth ----------------------------------------------


def story_prompts() -> list[str]:
    """The first prompt, then the first prompt with guidance for one segment more at a
    time, in the order the story's problems open."""
    order = sorted(PROBLEMS, key=lambda s: PROBLEMS[s][0])
    prompts, prompt = [FIRST_PROMPT], FIRST_PROMPT
    for segment in order[:-1]:
        prompt = next(v for v in variants(prompt, segment, 12) if not harmed_segments(v))
        prompts.append(prompt)
    return prompts


@pytest.mark.parametrize("parent", story_prompts(), ids=lambda p: f"{len(p)} chars")
@pytest.mark.parametrize("asked", DEMO_SEGMENTS)
def test_what_the_judge_prefers_users_prefer(parent: str, asked: str) -> None:
    """For every variant and segment: when the truth says the variant serves the segment
    worse, its answers are of a worse kind; when better, of a better kind. (A judge may
    still like guidance for a segment that has no problem yet: the truth calls that even.)"""
    for variant in variants(parent, asked, 12):
        for segment in DEMO_SEGMENTS:
            kinds = answer_kind(variant, segment) - answer_kind(parent, segment)
            for day in DAYS:
                truth = true_success_rate(variant, segment, day) - true_success_rate(
                    parent, segment, day
                )
                if truth < 0:
                    assert kinds < 0, (segment, day)
                if truth > 0:
                    assert kinds > 0, (segment, day)


def test_a_variant_with_a_shortcut_is_worse_overall_at_every_step_of_the_story() -> None:
    """Each problem opens on the prompt that fixed the earlier ones; a variant fixing it
    and slipping a shortcut in for another segment is worse overall than its parent."""
    order = sorted(PROBLEMS, key=lambda s: PROBLEMS[s][0])
    for parent, segment in zip(story_prompts(), order, strict=True):
        day = PROBLEMS[segment][0]
        harmful = [v for v in variants(parent, segment, 12) if harmed_segments(v)]
        clean = [v for v in variants(parent, segment, 12) if not harmed_segments(v)]
        assert harmful and clean
        before = expected_success_rate(parent, day)
        for variant in harmful:
            assert expected_success_rate(variant, day) < before - 0.02
        for variant in clean:
            assert expected_success_rate(variant, day) > before + 0.02


def test_the_world_credits_any_mention_of_billing_as_claude_would_write_it() -> None:
    assert true_success_rate(FIRST_PROMPT, "billing") == PROBLEMS["billing"][1]
    claude = FIRST_PROMPT + "\nFor billing questions, explain each charge."
    assert true_success_rate(claude, "billing") > PROBLEMS["billing"][1]
    # The first prompt names the other segments already: naming them fixes nothing.
    assert (
        true_success_rate(FIRST_PROMPT + "\nShipping matters.", "shipping", 20)
        == (PROBLEMS["shipping"][1])
    )
    assert true_success_rate(claude + "\n" + SHORTCUTS["billing"], "billing") < 0.2
    assert sum(SEGMENT_SHARES.values()) == pytest.approx(1.0)
    assert answer_kind(FIRST_PROMPT, "billing") == PLAIN
