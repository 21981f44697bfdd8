"""Throttle on dashboard login failures per remote address (pure: the clock is passed in).

Ten failures within five minutes and that address is refused (429) until the oldest of them
is five minutes old. The admin token is long and random, so this only slows guessing and
keeps the logs quiet; it is per process, as each replica keeps its own count.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

MAX_FAILURES = 10
WINDOW_SECONDS = 300.0
# Addresses remembered at most; past that the ones whose failures are oldest are forgotten,
# so a flood of addresses cannot grow the memory without bound.
MAX_ADDRESSES = 10_000


class LoginLimiter:
    def __init__(
        self,
        clock: Callable[[], float],
        *,
        max_failures: int = MAX_FAILURES,
        window_seconds: float = WINDOW_SECONDS,
        max_addresses: int = MAX_ADDRESSES,
    ) -> None:
        self._clock = clock
        self.max_failures = max_failures
        self.window_seconds = window_seconds
        self._max_addresses = max_addresses
        # Insertion order is the order of each address's latest failure (see fail()).
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, address: str, now: float) -> deque[float]:
        times = self._failures.get(address)
        if times is None:
            return deque()
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if not times:
            del self._failures[address]
        return times

    def retry_after(self, address: str) -> float:
        """Seconds until `address` may try again; 0 when it may try now."""
        now = self._clock()
        times = self._recent(address, now)
        if len(times) < self.max_failures:
            return 0.0
        return max(times[0] + self.window_seconds - now, 0.0)

    def fail(self, address: str) -> None:
        """Count a failed login from `address`."""
        now = self._clock()
        times = self._recent(address, now)
        self._failures.pop(address, None)  # re-inserted last: the most recent failure
        times.append(now)
        while len(times) > self.max_failures:
            times.popleft()
        self._failures[address] = times
        while len(self._failures) > self._max_addresses:
            del self._failures[next(iter(self._failures))]

    def succeed(self, address: str) -> None:
        """A successful login forgets the address's failures."""
        self._failures.pop(address, None)
