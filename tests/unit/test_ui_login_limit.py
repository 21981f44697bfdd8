"""The dashboard's login throttle (optimizer/ui/login_limit.py), on a clock the test moves."""

from __future__ import annotations

from optimizer.ui.login_limit import LoginLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ten_failures_in_five_minutes_block_the_address_until_the_oldest_ages_out():
    clock = Clock()
    limiter = LoginLimiter(clock)
    for _ in range(9):
        limiter.fail("10.0.0.1")
        clock.now += 10
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.fail("10.0.0.1")  # the tenth, at 1090
    assert limiter.retry_after("10.0.0.1") == 300 - 90
    assert limiter.retry_after("10.0.0.2") == 0  # other addresses are not affected
    clock.now = 1000 + 300  # the first failure is now five minutes old
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.fail("10.0.0.1")  # nine within the window again plus this one: blocked
    assert limiter.retry_after("10.0.0.1") > 0


def test_failures_spread_over_more_than_the_window_never_block():
    clock = Clock()
    limiter = LoginLimiter(clock)
    for _ in range(100):
        limiter.fail("::1")
        clock.now += 31  # ten failures take 310 s, longer than the window
        assert limiter.retry_after("::1") == 0


def test_a_successful_login_forgets_the_failures():
    clock = Clock()
    limiter = LoginLimiter(clock)
    for _ in range(9):
        limiter.fail("a")
    limiter.succeed("a")
    limiter.fail("a")
    assert limiter.retry_after("a") == 0


def test_memory_is_bounded_by_forgetting_the_stalest_addresses():
    clock = Clock()
    limiter = LoginLimiter(clock, max_failures=2, max_addresses=3)
    for name in ("a", "b", "c"):
        limiter.fail(name)
        limiter.fail(name)
    limiter.fail("a")  # "a" is now the most recent; "b" is the stalest
    limiter.fail("d")
    assert limiter.retry_after("b") == 0
    assert limiter.retry_after("a") > 0
    assert limiter.retry_after("c") > 0
