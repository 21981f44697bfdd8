"""Retrying after failures: the delay before the next try, and a small async retry loop.

Every retry in the service goes through here: failed jobs (the delay is stored as the job's
`run_after`), webhook deliveries, claims and finishing writes during a database outage, the
scheduler's tick, and the LISTEN reconnect.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")
MAX_RETRY_DELAY_SECONDS = 3600.0
# Past 2**64 any sane base exceeds any cap; without a bound, a counter of failures that keeps
# growing through a long outage would overflow the float.
_MAX_DOUBLINGS = 64


def retry_delay(
    attempt: int,
    base_seconds: float,
    rng: random.Random | None = None,
    cap_seconds: float = MAX_RETRY_DELAY_SECONDS,
) -> float:
    """Delay before the next try after failed attempt number `attempt` (1-based).

    Doubles per attempt up to `cap_seconds`. With `rng`, the delay is drawn from [half, full]
    of that, which spreads retries of work that failed together (say, during an outage)
    instead of bunching them; without it, the delay is exact.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    ceiling = min(cap_seconds, base_seconds * 2.0 ** min(attempt - 1, _MAX_DOUBLINGS))
    return ceiling if rng is None else ceiling * rng.uniform(0.5, 1.0)


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    on: type[Exception] | tuple[type[Exception], ...],
    base_seconds: float,
    cap_seconds: float,
    may_wait: Callable[[float], bool] = lambda delay: True,
    on_retry: Callable[[Exception, float], None] | None = None,
) -> T:
    """Await `call()` until it returns. After its n-th failure in a row with one of `on`,
    wait `retry_delay(n)` and try again, unless `may_wait(delay)` says that wait would go
    past the caller's deadline: then the failure is raised. `on_retry(error, delay)` is
    told before each wait (to log it). Any other exception is raised at once."""
    failures = 0
    while True:
        try:
            return await call()
        except on as exc:
            failures += 1
            delay = retry_delay(failures, base_seconds, cap_seconds=cap_seconds)
            if not may_wait(delay):
                raise
            if on_retry is not None:
                on_retry(exc, delay)
            await asyncio.sleep(delay)
