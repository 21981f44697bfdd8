"""Per-token rate limit on the application API (/v1/...): a token bucket per bearer token.

Each token's bucket holds up to APP_RATE_LIMIT_BURST requests and refills at
APP_RATE_LIMIT_PER_SECOND; a request over the limit is answered 429 with Retry-After.
APP_RATE_LIMIT_PER_SECOND=0 turns the limit off.

Buckets are keyed by a SHA-256 of the presented token, so the token itself is never held
as a key or shown anywhere. They live in memory, per process: with N replicas behind a load
balancer a token can make up to N times the configured rate in total.

`TokenBuckets` is the pure logic (clock injected); `rate_limited` is the aiohttp glue. It
runs after the token check, so a request refused with 401 costs no budget.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from collections.abc import Callable

from aiohttp import web

from optimizer.config import Settings
from optimizer.http.auth import Handler, presented_token
from optimizer.http.errors import ApiError

# Only authenticated tokens get a bucket, so this bounds memory against key rotation
# churn, not against strangers.
MAX_BUCKETS = 10_000


def token_key(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenBuckets:
    """One token bucket per key: `take(key)` spends one request or says how long to wait."""

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = MAX_BUCKETS,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate_per_second must be > 0 and burst >= 1")
        self.rate = rate_per_second
        self.burst = burst
        self._clock = clock
        self._max = max_buckets
        # key -> (tokens left, when that was computed)
        self._buckets: dict[str, tuple[float, float]] = {}

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(self._buckets)

    def take(self, key: str) -> float:
        """0.0 when the request may go ahead (one token spent), else the seconds until a
        token is available (nothing spent)."""
        now = self._clock()
        tokens = self._level(key, now)
        if tokens >= 1.0:
            self._store(key, tokens - 1.0, now)
            return 0.0
        self._store(key, tokens, now)
        return (1.0 - tokens) / self.rate

    def _level(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return float(self.burst)
        tokens, since = state
        # max(): a clock that steps backwards must not drain the bucket.
        return min(float(self.burst), tokens + max(0.0, now - since) * self.rate)

    def _store(self, key: str, tokens: float, now: float) -> None:
        if key not in self._buckets and len(self._buckets) >= self._max:
            self._drop_full(now)
        self._buckets[key] = (tokens, now)

    def _drop_full(self, now: float) -> None:
        # A bucket that has refilled is the same as no bucket: forgetting it changes nothing.
        full = [k for k in self._buckets if self._level(k, now) >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max:
            # Still full: forget the longest-idle bucket, which errs towards letting it in.
            oldest = min(self._buckets, key=lambda k: self._buckets[k][1])
            del self._buckets[oldest]


APP_RATE_LIMIT = web.AppKey("app_rate_limit", TokenBuckets)


def install(app: web.Application, settings: Settings) -> None:
    """Create the per-process buckets unless APP_RATE_LIMIT_PER_SECOND is 0."""
    if settings.app_rate_limit_per_second > 0:
        app[APP_RATE_LIMIT] = TokenBuckets(
            settings.app_rate_limit_per_second, settings.app_rate_limit_burst
        )


def retry_after_seconds(wait: float) -> int:
    return max(1, math.ceil(wait))


def rate_limited(handler: Handler) -> Handler:
    """Spend one request from the caller's bucket; put this under @ingest_only."""

    @functools.wraps(handler)
    async def limited(request: web.Request) -> web.StreamResponse:
        buckets = request.app.get(APP_RATE_LIMIT)
        if buckets is not None and (token := presented_token(request)) is not None:
            wait = buckets.take(token_key(token))
            if wait > 0:
                seconds = retry_after_seconds(wait)
                raise ApiError(
                    429,
                    f"rate limit exceeded for this token: {buckets.rate:g} requests/s "
                    f"with bursts of {buckets.burst} (APP_RATE_LIMIT_PER_SECOND, "
                    f"APP_RATE_LIMIT_BURST); retry after {seconds} s",
                    headers={"Retry-After": str(seconds)},
                )
        return await handler(request)

    return limited
