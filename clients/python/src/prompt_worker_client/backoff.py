"""When to try again: exponential backoff with jitter, and the server's Retry-After."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

# A Retry-After further out than this is taken as this: a clock far off, or a proxy's
# misconfiguration, must not stall delivery for hours.
MAX_RETRY_AFTER = 300.0


def backoff_delay(attempt: int, *, base: float, cap: float, jitter: float) -> float:
    """The wait before retry number `attempt` (1 for the first retry): base * 2**(attempt-1),
    at most `cap`, scaled into its upper half by `jitter` in [0, 1) so that many clients
    that failed together do not retry together."""
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 60))
    return ceiling * (0.5 + jitter / 2)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a Retry-After header (RFC 9110 10.2.3: a number of seconds or an
    HTTP date), at most MAX_RETRY_AFTER; None when the header is absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        seconds = float(text)  # not the RFC's form, but some servers send "1.5"
    except ValueError:
        seconds = math.nan
    if math.isfinite(seconds):
        return min(max(seconds, 0.0), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max((when - now).total_seconds(), 0.0), MAX_RETRY_AFTER)
