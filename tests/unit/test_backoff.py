"""Retry delays (exponential growth, jitter within [half, full], a cap, reproducible) and
the async retry loop."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from optimizer.runtime.backoff import MAX_RETRY_DELAY_SECONDS, retry, retry_delay


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


@settings(max_examples=200)
@given(
    attempt=st.integers(1, 10_000),
    base=st.floats(0.0, 1e6),
    cap=st.floats(0.0, 1e6),
    seed=st.integers(0, 2**32),
)
def test_jittered_delay_is_within_half_and_full_of_the_exact_one(attempt, base, cap, seed):
    exact = retry_delay(attempt, base, cap_seconds=cap)
    assert exact == min(cap, base * 2.0 ** min(attempt - 1, 64))
    assert exact / 2 <= retry_delay(attempt, base, random.Random(seed), cap) <= exact


def test_without_rng_the_delay_is_exact():
    assert [retry_delay(n, 1.0, cap_seconds=5.0) for n in range(1, 6)] == [1, 2, 4, 5, 5]


def test_failures_counted_through_a_long_outage_do_not_overflow():
    assert retry_delay(10**9, 1.0, cap_seconds=5.0) == 5.0


# --- the async retry loop ---------------------------------------------------------------------


class Flaky:
    """Fails with `error` the first `failures` calls, then answers "ok"."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.left = failures
        self.error = error
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.left > 0:
            self.left -= 1
            raise self.error
        return "ok"


async def test_retry_waits_the_backoff_between_tries_until_the_call_succeeds():
    call = Flaky(3, OSError("down"))
    waits: list[tuple[str, float]] = []
    answer = await retry(
        call,
        on=OSError,
        base_seconds=0.001,
        cap_seconds=0.003,
        on_retry=lambda exc, delay: waits.append((str(exc), delay)),
    )
    assert (answer, call.calls) == ("ok", 4)
    assert waits == [("down", 0.001), ("down", 0.002), ("down", 0.003)]


async def test_retry_raises_the_failure_when_the_next_wait_is_not_allowed():
    call = Flaky(10, OSError("still down"))
    offered: list[float] = []

    def may_wait(delay: float) -> bool:
        offered.append(delay)
        return len(offered) < 3

    with pytest.raises(OSError, match="still down"):
        await retry(
            call, on=(OSError, TimeoutError), base_seconds=0.001, cap_seconds=1.0, may_wait=may_wait
        )
    assert call.calls == 3 and offered == [0.001, 0.002, 0.004]


async def test_retry_lets_other_errors_through_at_once():
    call = Flaky(1, ValueError("a bug"))
    with pytest.raises(ValueError, match="a bug"):
        await retry(call, on=OSError, base_seconds=0.0, cap_seconds=0.0)
    assert call.calls == 1
