"""The win rate of pairwise judgements and its interval."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from optimizer.stats.win_rate import LOSS, TIE, WIN, pair_score, win_rate, win_rate_from_counts


@pytest.mark.parametrize(
    ("first", "second", "score"),
    [
        ("candidate", "candidate", WIN),
        ("control", "control", LOSS),
        ("tie", "tie", TIE),
        ("candidate", "control", TIE),  # flipped with the order: position bias
        ("control", "candidate", TIE),
        ("candidate", "tie", TIE),
        ("tie", "control", TIE),
    ],
)
def test_pair_score_needs_both_orders_to_agree(first: str, second: str, score: float) -> None:
    assert pair_score(first, second) == score


def test_no_judgement_is_an_error_code_not_a_nan() -> None:
    result = win_rate([])
    assert result.error == "empty"
    assert result.rate is None and result.low is None and result.high is None


def test_all_wins_on_eight_conversations_is_clearly_above_a_half() -> None:
    result = win_rate([WIN] * 8, confidence=0.90)
    assert result.rate == 1.0
    assert result.low is not None and 0.7 < result.low < 0.8
    assert result.high == 1.0


def test_a_coin_flip_straddles_a_half() -> None:
    result = win_rate([WIN, LOSS] * 10)
    assert result.low is not None and result.high is not None
    assert result.low < 0.5 < result.high
    assert result.wins == 10 and result.losses == 10 and result.ties == 0


def test_the_interval_narrows_with_more_conversations() -> None:
    small = win_rate([WIN, WIN, TIE] * 3)
    large = win_rate([WIN, WIN, TIE] * 30)
    assert small.rate == pytest.approx(large.rate or 0)
    assert (large.high or 0) - (large.low or 0) < (small.high or 0) - (small.low or 0)


@given(st.lists(st.sampled_from([WIN, TIE, LOSS]), max_size=400), st.floats(0.5, 0.999))
def test_the_interval_holds_the_rate_and_stays_finite(scores: list[float], conf: float) -> None:
    result = win_rate(scores, confidence=conf)
    assert result.wins + result.ties + result.losses == result.n == len(scores)
    if not scores:
        return
    assert result.rate is not None and result.low is not None and result.high is not None
    assert all(math.isfinite(x) for x in (result.rate, result.low, result.high))
    assert 0.0 <= result.low <= result.rate <= result.high <= 1.0


def test_confidence_outside_zero_one_is_refused() -> None:
    with pytest.raises(ValueError, match="confidence"):
        win_rate([WIN], confidence=1.0)


@given(
    st.integers(0, 3_000),
    st.integers(0, 3_000),
    st.integers(0, 3_000),
    st.floats(0.5, 0.999),
    st.randoms(use_true_random=False),
)
def test_counts_give_exactly_the_win_rate_of_the_scores(
    wins: int, ties: int, losses: int, conf: float, rng
) -> None:
    scores = [WIN] * wins + [TIE] * ties + [LOSS] * losses
    rng.shuffle(scores)  # the order of the judgements does not matter
    assert win_rate_from_counts(wins, ties, losses, conf) == win_rate(scores, confidence=conf)


def test_counts_refuse_what_no_count_can_be() -> None:
    with pytest.raises(ValueError, match="negative"):
        win_rate_from_counts(3, -1, 0)
    with pytest.raises(ValueError, match="confidence"):
        win_rate_from_counts(3, 1, 0, confidence=0.0)
    assert win_rate_from_counts(0, 0, 0).error == "empty"
