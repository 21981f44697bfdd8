"""Retry delays: exponential growth, jitter within [half, full], a cap, reproducible."""

from __future__ import annotations

import random

import pytest

from optimizer.runtime.backoff import MAX_RETRY_DELAY_SECONDS, retry_delay


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6])
def test_delay_lies_within_half_and_full_of_the_exponential_ceiling(attempt):
    rng = random.Random(attempt)
    ceiling = 10.0 * 2 ** (attempt - 1)
    delays = [retry_delay(attempt, 10.0, rng) for _ in range(500)]
    assert all(ceiling / 2 <= d <= ceiling for d in delays)
    # Jitter really spreads the draws over the band rather than pinning one value.
    assert max(delays) - min(delays) > ceiling * 0.4


def test_delays_grow_exponentially():
    rng = random.Random(0)
    means = [sum(retry_delay(n, 1.0, rng) for _ in range(2000)) / 2000 for n in range(1, 7)]
    for n, mean in enumerate(means, start=1):
        assert mean == pytest.approx(0.75 * 2 ** (n - 1), rel=0.05)
    for earlier, later in zip(means, means[1:], strict=False):
        assert later / earlier == pytest.approx(2.0, rel=0.1)


def test_delay_is_capped():
    rng = random.Random(3)
    delays = [retry_delay(30, 30.0, rng, cap_seconds=600.0) for _ in range(200)]
    assert all(300.0 <= d <= 600.0 for d in delays)


def test_default_cap_applies_to_huge_attempt_numbers():
    rng = random.Random(4)
    delay = retry_delay(1000, 30.0, rng)
    assert MAX_RETRY_DELAY_SECONDS / 2 <= delay <= MAX_RETRY_DELAY_SECONDS


def test_zero_base_means_retry_at_once():
    assert retry_delay(5, 0.0, random.Random(1)) == 0.0


def test_seeded_rng_is_reproducible():
    first = [retry_delay(n, 5.0, random.Random(42)) for n in range(1, 8)]
    second = [retry_delay(n, 5.0, random.Random(42)) for n in range(1, 8)]
    other = [retry_delay(n, 5.0, random.Random(43)) for n in range(1, 8)]
    assert first == second
    assert first != other


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempt_below_one_raises(attempt):
    with pytest.raises(ValueError, match="1-based"):
        retry_delay(attempt, 10.0, random.Random(0))
