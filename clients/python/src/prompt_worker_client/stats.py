"""What the client did, counted: `client.stats` answers a snapshot of these."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Stats:
    """Counters since the client started; `buffered` and the config fields are current
    values. Every problem the client logs is also counted here, so a dashboard can watch it."""

    # The configuration (GET /v1/config).
    config_loads: int = 0  # 200 answers whose document was applied
    config_not_modified: int = 0  # 304 answers: the cached configuration is still current
    config_failures: int = 0  # refreshes that failed (unreachable, timeout, 4xx, 5xx, 429)
    config_rejected: int = 0  # documents this SDK could not evaluate (kept the last good one)
    config_etag: str | None = None
    config_fetched_at: float | None = None  # time.time() of the last 200 or 304
    # get_prompt.
    fallbacks_served: int = 0  # answers from `fallback` (no config, or the name not in it)
    # log() and delivery (POST /v1/conversations).
    logged: int = 0  # conversations log() accepted into the buffer
    sent: int = 0  # conversations the service stored (202)
    batches_sent: int = 0  # batches the service stored
    retries: int = 0  # attempts that failed and will be tried again (429, 5xx, network)
    dropped_overflow: int = 0  # the oldest buffered, dropped because the buffer was full
    dropped_rejected: int = 0  # refused by the service (a 4xx other than 429): never stored
    dropped_invalid: int = 0  # not sendable (not JSON, no version): dropped by log()
    dropped_at_close: int = 0  # still undelivered when close() gave up, or logged after it
    buffered: int = 0  # conversations waiting now (being sent included)
    buffered_bytes: int = 0  # the size of their JSON (what max_buffered_bytes bounds)
