"""Retry delays: exponential backoff with jitter (pure)."""

from __future__ import annotations

import random

MAX_RETRY_DELAY_SECONDS = 3600.0


def retry_delay(attempt: int, base_seconds: float, rng: random.Random,
                cap_seconds: float = MAX_RETRY_DELAY_SECONDS) -> float:
    """Delay before the next try after failed attempt number `attempt` (1-based).

    Doubles per attempt up to `cap_seconds`; the draw from [half, full] of that spreads
    retries of jobs that failed together (say, during an outage) instead of bunching them.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    ceiling = min(cap_seconds, base_seconds * 2.0 ** (attempt - 1))
    return ceiling * rng.uniform(0.5, 1.0)
