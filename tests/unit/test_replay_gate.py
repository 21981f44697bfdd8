"""The replay gate: a candidate goes live only when it wins where the active version failed
(interval above one half) and does not lose elsewhere; the best go first, at most
MAX_LIVE_CANDIDATES; every decision explains itself with the figures."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.replay.gate import (
    GATE_CONFIDENCE,
    CandidateFigures,
    allowed_net_losses,
    decide,
    figures_text,
)
from optimizer.stats.win_rate import win_rate

SCORES = st.lists(st.sampled_from([0.0, 0.5, 1.0]), max_size=30)


def figures(version: int, failing: list[float], holdout: list[float]) -> CandidateFigures:
    return CandidateFigures(
        version,
        win_rate(failing, GATE_CONFIDENCE),
        win_rate(holdout, GATE_CONFIDENCE),
        holdout_empty="REPLAY_HOLDOUT_SAMPLE=0",
    )


def test_the_reason_of_a_rejected_candidate_shows_the_figures():
    [decision] = decide([figures(4, [1, 1, 1, 0.5, 0.5, 0, 0, 0], [0.5] * 6)], max_live=2)
    assert not decision.passed and not decision.live
    assert decision.reason == (
        "rejected by replay: failing sample: won 3, tied 2, lost 3 of 8, win rate 0.50 "
        "[0.25, 0.75] at 90%: not above one half; held-out sample: won 0, tied 6, lost 0 of "
        "6, win rate 0.50 [0.22, 0.78] at 90%: not losing"
    )


def test_a_candidate_that_wins_but_loses_the_holdout_is_rejected():
    [decision] = decide([figures(2, [1.0] * 8, [0.0] * 5 + [0.5])], max_live=2)
    assert not decision.passed
    assert "failing sample: won 8, tied 0, lost 0 of 8" in decision.reason
    assert decision.reason.endswith("loses to the active version")


def test_an_empty_holdout_is_not_held_against_a_candidate_and_says_why():
    [decision] = decide([figures(3, [1.0] * 8, [])], max_live=2)
    assert decision.passed and decision.live
    assert "held-out sample: empty (REPLAY_HOLDOUT_SAMPLE=0): not checked" in decision.reason


def test_an_empty_failing_sample_rejects():
    empty = CandidateFigures(
        5, win_rate([]), win_rate([0.5] * 4), failing_empty="no failed conversation in x"
    )
    [decision] = decide([empty], max_live=2)
    assert not decision.passed
    assert "failing sample: empty (no failed conversation in x)" in decision.reason


def test_passing_candidates_are_ranked_and_capped():
    decisions = decide(
        [
            figures(2, [1.0] * 6 + [0.5] * 2, [0.5] * 6),
            figures(3, [1.0] * 8, [0.5] * 6),
            figures(4, [1.0] * 8, [1.0] * 6),
            figures(5, [0.0] * 8, [0.5] * 6),
        ],
        max_live=2,
    )
    assert [(d.version, d.passed, d.live) for d in decisions] == [
        (4, True, True),
        (3, True, True),
        (2, True, False),
        (5, False, False),
    ]
    assert "held back" in decisions[2].reason and "MAX_LIVE_CANDIDATES" in decisions[2].reason
    assert decisions[0].reason.startswith("passed replay: failing sample: won 8")


def test_a_held_out_loss_ranks_below_a_judge_miss_on_the_failing_sample():
    """Both pass; one lost a held-out conversation (a judge's miss, or a regression too
    small to reject), the other had one tie more on the failing sample (the judge's noise):
    the clean one goes live first."""
    doubtful = figures(2, [1.0] * 8, [0.0] + [0.5] * 5)
    clean = figures(3, [1.0] * 7 + [0.5], [0.5] * 6)
    decisions = decide([doubtful, clean], max_live=1)
    assert [(d.version, d.passed, d.live) for d in decisions] == [(3, True, True), (2, True, False)]


def test_a_regression_in_one_other_segment_is_rejected_though_its_interval_reaches_half():
    """Two of six held-out conversations lost, none won: the interval's upper end is above
    one half, but it lost two more than it won where one is allowed in six."""
    regressing = figures(2, [1.0] * 8, [0.0] * 2 + [0.5] * 4)
    assert regressing.holdout.high is not None and regressing.holdout.high >= 0.5
    [decision] = decide([regressing], max_live=2)
    assert not decision.passed
    assert decision.reason.endswith(
        "loses to the active version (2 more lost than won; at most 1 allowed in 6)"
    )


@pytest.mark.parametrize(
    ("n", "allowed"), [(1, 1), (5, 1), (6, 1), (11, 1), (12, 2), (24, 4), (100, 16)]
)
def test_one_net_loss_is_allowed_per_six_held_out_conversations(n, allowed):
    assert allowed_net_losses(n) == allowed
    at_limit = figures(2, [1.0] * 8, [0.0] * allowed + [0.5] * (n - allowed))
    cases = [at_limit]
    if allowed < n:  # one more loss than allowed, in a sample of the same size
        cases.append(figures(3, [1.0] * 8, [0.0] * (allowed + 1) + [0.5] * (n - allowed - 1)))
    assert all(case.holdout.n == n for case in cases)
    held = {d.version: d.passed for d in decide(cases, max_live=2)}
    # At the limit it passes unless the interval itself already rejects it.
    assert held[2] == (at_limit.holdout.high is not None and at_limit.holdout.high >= 0.5)
    assert held.get(3, False) is False


def test_max_live_must_be_positive():
    with pytest.raises(ValueError, match="max_live"):
        decide([], max_live=0)


def test_figures_text_of_nothing():
    assert figures_text(win_rate([])) == "no judgement"


@given(
    candidates=st.lists(st.tuples(SCORES, SCORES), max_size=6),
    max_live=st.integers(1, 5),
)
def test_the_gate_rule_holds_for_any_figures(candidates, max_live):
    items = [figures(i + 2, f, h) for i, (f, h) in enumerate(candidates)]
    decisions = decide(items, max_live=max_live)
    assert sorted(d.version for d in decisions) == [item.version for item in items]
    by_version = {item.version: item for item in items}
    for decision in decisions:
        item = by_version[decision.version]
        wins = item.failing.low is not None and item.failing.low > 0.5
        holdout = item.holdout
        holds = holdout.high is None or (
            holdout.high >= 0.5 and holdout.losses - holdout.wins <= max(1, holdout.n // 6)
        )
        assert decision.passed == (wins and holds)
        if not decision.passed:
            assert decision.reason.startswith("rejected by replay: failing sample: ")
            assert "held-out sample: " in decision.reason
            if item.failing.n:
                assert f" of {item.failing.n}, win rate " in decision.reason
        assert re.search(r"\bnan\b", decision.reason) is None
    live = [d for d in decisions if d.live]
    passed = [d for d in decisions if d.passed]
    assert len(live) == min(max_live, len(passed))
    assert decisions[: len(passed)] == passed  # passing ones first
    assert passed[: len(live)] == live  # the live ones are the best of them
    # Best first: by the held-out win rate (an empty sample counts as one half), then the
    # failing one.
    ranks = [
        (d.holdout.rate if d.holdout.rate is not None else 0.5, d.failing.rate) for d in passed
    ]
    assert ranks == sorted(ranks, reverse=True)
