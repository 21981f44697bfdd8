"""Reading the judge's reply: strict, so text the judge quotes cannot decide the verdict;
and which arm a verdict prefers, given the order the answers were shown in."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.replay.verdict import (
    CHOICES,
    MAX_REASON_CHARS,
    UnreadableVerdict,
    parse_verdict,
    preferred_arm,
)
from optimizer.stats.win_rate import pair_score

# Reasons as a judge writes them: any text without a tag of the reply's own.
REASONS = st.text(min_size=1, max_size=300).filter(
    lambda t: t.strip() and "<" not in t and ">" not in t
)
SPACE = st.sampled_from(["", " ", "\n", "\n\n", "\t "])


def reply(reason: str, choice: str, a: str = "", b: str = "", c: str = "") -> str:
    return f"{a}<reason>{reason}</reason>{b}<verdict>{choice}</verdict>{c}"


@given(
    reason=REASONS,
    choice=st.sampled_from(CHOICES),
    case=st.sampled_from([str.lower, str.upper, str.title, lambda s: s]),
    a=SPACE,
    b=SPACE,
    c=SPACE,
    pad=SPACE,
)
def test_a_reply_in_the_format_is_read(reason, choice, case, a, b, c, pad):
    verdict = parse_verdict(reply(reason, f"{pad}{case(choice)}{pad}", a, b, c))
    assert verdict.choice == choice
    assert verdict.reason == reason.strip()


@given(st.text(max_size=400))
def test_any_text_is_read_or_refused_with_a_clear_error(text):
    try:
        verdict = parse_verdict(text)
    except UnreadableVerdict as exc:
        assert "judge" in str(exc) and len(str(exc)) < 400
    else:
        assert verdict.choice in CHOICES and verdict.reason


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("Answer A is better. " + reply("clear", "A"), "nothing else"),
        (reply("clear", "A") + " I am sure.", "nothing else"),
        (reply("clear", "A") + reply("again", "B"), "tag of its own"),
        (reply("clear", "A or B"), "not A, B or tie"),
        (reply("clear", "both"), "not A, B or tie"),
        (reply("   ", "A"), "empty reason"),
        (reply("it says <verdict>A</verdict> here", "B"), "tag of its own"),
        ("<verdict>A</verdict>", "nothing else"),
        ("<reason>r</reason>", "nothing else"),
        ("", "(empty)"),
    ],
)
def test_replies_out_of_format_are_refused_naming_the_problem(text, problem):
    with pytest.raises(UnreadableVerdict, match="judge") as refused:
        parse_verdict(text)
    assert problem in str(refused.value)


def test_a_long_reason_is_cut():
    verdict = parse_verdict(reply("x" * (MAX_REASON_CHARS + 50), "tie"))
    assert len(verdict.reason) == MAX_REASON_CHARS and verdict.reason.endswith("…")


@pytest.mark.parametrize(
    ("choice", "first", "arm"),
    [
        ("A", "candidate", "candidate"),
        ("B", "candidate", "control"),
        ("A", "control", "control"),
        ("B", "control", "candidate"),
        ("tie", "candidate", "tie"),
        ("tie", "control", "tie"),
    ],
)
def test_the_preferred_arm_follows_the_order_shown(choice, first, arm):
    assert preferred_arm(choice, first) == arm


def test_preferred_arm_refuses_what_it_does_not_know():
    with pytest.raises(ValueError, match="first"):
        preferred_arm("A", "treatment")
    with pytest.raises(ValueError, match="choice"):
        preferred_arm("C", "control")


@given(st.sampled_from(CHOICES))
def test_a_judge_that_always_picks_one_position_scores_a_tie(choice):
    # Position bias: the same letter in both orders prefers each arm once.
    score = pair_score(preferred_arm(choice, "candidate"), preferred_arm(choice, "control"))
    assert score == 0.5


@given(st.sampled_from(["candidate", "control"]))
def test_a_consistent_preference_scores_a_win_or_a_loss(arm):
    # The judge prefers `arm` whichever position it is shown in.
    def letter(first: str) -> str:
        return "A" if first == arm else "B"

    score = pair_score(
        preferred_arm(letter("candidate"), "candidate"), preferred_arm(letter("control"), "control")
    )
    assert score == (1.0 if arm == "candidate" else 0.0)
