"""Sticky assignment: same unit -> same arm, splits that follow the weights, and a hash
scheme locked to fixed values so a change of it (which would move every live user to
another arm) cannot slip in unnoticed."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest
from scipy import stats

from optimizer.assignment import pick_arm, unit_point

N_UNITS = 20_000


def test_same_unit_always_gets_the_same_arm() -> None:
    arms = [(10, 1.0), (11, 1.0), (12, 2.0)]
    for unit in ("alice", "bob", "session-9", "ü-unit", ""):
        first = pick_arm(3, unit, arms)
        assert all(pick_arm(3, unit, arms) == first for _ in range(20))
        assert pick_arm(3, unit, list(reversed(arms))) == first  # caller's order is irrelevant


def test_hash_scheme_is_locked() -> None:
    # sha256("7:user-42"), first 8 bytes big-endian over 2**64: computed once and frozen.
    expected = int.from_bytes(hashlib.sha256(b"7:user-42").digest()[:8], "big") / 2**64
    assert unit_point(7, "user-42") == expected == 0.38789009630293964
    assert pick_arm(7, "user-42", [(1, 1.0), (2, 1.0)]) == 1
    assert [pick_arm(7, f"u{i}", [(1, 1.0), (2, 3.0)]) for i in range(10)] == [
        2,
        1,
        2,
        1,
        1,
        2,
        1,
        2,
        1,
        2,
    ]


@pytest.mark.parametrize("weights", [(1.0, 1.0), (1.0, 3.0), (2.0, 1.0, 1.0)])
def test_split_follows_the_weights(weights: tuple[float, ...]) -> None:
    arms = [(100 + i, w) for i, w in enumerate(weights)]
    counts = Counter(pick_arm(42, f"unit-{i}", arms) for i in range(N_UNITS))
    total = sum(weights)
    expected = [N_UNITS * w / total for w in weights]
    observed = [counts[arm_id] for arm_id, _ in arms]
    for seen, want in zip(observed, expected, strict=True):
        assert abs(seen - want) / N_UNITS < 0.02
    # Loose: a fair hash fails this about once in a million runs; the inputs are fixed anyway.
    assert stats.chisquare(observed, expected).pvalue > 1e-6


def test_one_to_three_weights() -> None:
    counts = Counter(pick_arm(9, f"u{i}", [(1, 1.0), (2, 3.0)]) for i in range(N_UNITS))
    assert 0.23 < counts[1] / N_UNITS < 0.27


def test_experiments_split_independently() -> None:
    arms = [(1, 1.0), (2, 1.0)]
    same = sum(pick_arm(1, f"u{i}", arms) == pick_arm(2, f"u{i}", arms) for i in range(4000))
    assert 0.45 < same / 4000 < 0.55


@pytest.mark.parametrize("arms", [[], [(1, 0.0)], [(1, -1.0)], [(1, float("nan"))]])
def test_bad_arms_are_refused(arms: list[tuple[int, float]]) -> None:
    with pytest.raises(ValueError):
        pick_arm(1, "u", arms)
