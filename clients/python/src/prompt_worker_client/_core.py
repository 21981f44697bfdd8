"""The client's state and decisions, shared by Client (threads) and AsyncClient (tasks):
the cached configuration and get_prompt, the log buffer, and what each answer of the service
does to them. No I/O here: the two clients do the HTTP and the waiting.

Everything that changes state holds `lock` (re-entrant, so a Condition can share it);
get_prompt reads the current configuration without it (replacing a reference is atomic).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from threading import RLock
from typing import Any
from urllib.parse import urlsplit

from prompt_worker_client._throttle import Throttle, logger
from prompt_worker_client._version import __version__
from prompt_worker_client.assignment import unit_id_problem
from prompt_worker_client.backoff import backoff_delay
from prompt_worker_client.batching import Batch, Buffer
from prompt_worker_client.config import Config, ServedPrompt, parse_config
from prompt_worker_client.errors import ConfigError, InvalidUnitId, NotFoundReason, PromptNotFound
from prompt_worker_client.protocol import (
    IDEMPOTENCY_HEADER,
    MAX_BATCH,
    encode_conversation,
    judge_config,
    judge_send,
)
from prompt_worker_client.stats import Stats

RETRY_BASE = 0.5  # seconds before the first retry of a batch, doubling after each failure
MAX_BUFFERED_BYTES = 64 * 1024 * 1024  # the default bound on the buffer's JSON, in bytes


@dataclass(frozen=True)
class Options:
    """The settings both clients take (documented on Client)."""

    base_url: str
    token: str
    fallback: Mapping[str, str] = field(default_factory=dict)
    refresh_interval: float = 10.0
    batch_size: int = 500
    flush_interval: float = 1.0
    max_buffered: int = 10_000
    max_buffered_bytes: int = MAX_BUFFERED_BYTES
    request_timeout: float = 10.0
    init_timeout: float = 5.0
    close_timeout: float = 5.0
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        url = urlsplit(self.base_url)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ValueError(f"base_url must be an http:// or https:// URL; got {self.base_url!r}")
        if not isinstance(self.token, str) or not self.token.strip():
            raise ValueError("token must be the service's INGEST_TOKEN (a non-empty string)")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in self.fallback.items()):
            raise TypeError("fallback must map prompt names (str) to prompt texts (str)")
        if not 1 <= self.batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be from 1 to {MAX_BATCH} (the service's limit)")
        if self.max_buffered <= self.batch_size:
            raise ValueError("max_buffered must be larger than batch_size")
        if isinstance(self.max_buffered_bytes, bool) or not (
            isinstance(self.max_buffered_bytes, int) and self.max_buffered_bytes > 0
        ):
            raise ValueError("max_buffered_bytes must be a whole number of bytes, more than 0")
        positive = ("refresh_interval", "flush_interval", "request_timeout", "max_backoff")
        for name in (*positive, "init_timeout", "close_timeout"):
            value = getattr(self, name)
            if not (value > 0 if name in positive else value >= 0):  # NaN fails both
                raise ValueError(
                    f"{name} must be {'more than' if name in positive else 'at least'} 0 seconds"
                )

    @property
    def headers(self) -> dict[str, str]:
        return {
            "Authorization": f"Bearer {self.token}",
            "User-Agent": f"prompt-worker-client-python/{__version__}",
        }


class Core:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.lock = RLock()
        self.config: Config | None = None
        self.buffer = Buffer(
            options.batch_size,
            options.max_buffered,
            options.flush_interval,
            max_bytes=options.max_buffered_bytes,
        )
        self.closed = False
        self._stats = Stats()
        self._throttle = Throttle()
        self._refresh_failing = False
        self._fallbacks = {
            name: ServedPrompt(name, text, None, None, fallback=True)
            for name, text in options.fallback.items()
        }

    def stats(self) -> Stats:
        with self.lock:
            return replace(self._stats, buffered=len(self.buffer), buffered_bytes=self.buffer.bytes)

    # --- get_prompt ------------------------------------------------------------------

    def get_prompt(self, name: str, unit_id: str) -> ServedPrompt:
        config = self.config
        if config is not None:
            rule = config.prompts.get(name)
            if rule is not None:
                served = rule.serve(unit_id) if unit_id_problem(unit_id) is None else None
                if served is not None:
                    return served
        return self._not_served(name, unit_id, config)

    def _not_served(self, name: str, unit_id: str, config: Config | None) -> ServedPrompt:
        problem = unit_id_problem(unit_id)
        if problem is not None:
            raise InvalidUnitId(f"unit_id {problem}; send the id of the user or session")
        reason: NotFoundReason
        if config is None:
            reason = "no_config"
        elif name in config.prompts:
            reason = "no_active_version"
        else:
            reason = "unknown_prompt"
        fallback = self._fallbacks.get(name)
        if fallback is None:
            raise PromptNotFound(name, reason, self._not_found_message(name, reason))
        with self.lock:
            self._stats.fallbacks_served += 1
        if reason != "no_config":  # a cold start is logged by the failing refresh already
            self._throttle.log(
                logging.WARNING,
                f"fallback:{name}",
                "prompt %r cannot be served from the configuration (%s); serving its fallback",
                name,
                reason.replace("_", " "),
            )
        return fallback

    def _not_found_message(self, name: str, reason: NotFoundReason) -> str:
        hint = f"; or pass fallback={{{name!r}: '...'}} to the client"
        if reason == "unknown_prompt":
            return f"no prompt named {name!r} in prompt-worker's configuration{hint}"
        if reason == "no_active_version":
            return (
                f"prompt {name!r} has no active version; activate one with "
                f"POST /prompts/{name}/rollback{hint}"
            )
        return (
            f"no configuration loaded yet from {self.options.base_url} (the log says why) "
            f"and no fallback for prompt {name!r}{hint}"
        )

    # --- the configuration -----------------------------------------------------------

    def config_headers(self) -> dict[str, str]:
        config = self.config
        if config is None or config.etag is None:
            return {}
        return {"If-None-Match": config.etag}

    def config_answered(self, status: int, headers: Mapping[str, str], body: bytes) -> float:
        """Apply an answer of GET /v1/config; answers the seconds until the next refresh."""
        verdict = judge_config(status, headers, body, datetime.now(UTC))
        if verdict.action == "failed":
            self._config_failed(verdict.reason)
            return max(self.options.refresh_interval, verdict.retry_after or 0.0)
        if verdict.action == "load":
            try:
                config = parse_config(json.loads(body), headers.get("ETag"))
            except (ValueError, ConfigError) as exc:  # not JSON, or not a document we can use
                with self.lock:
                    self._stats.config_rejected += 1
                self._throttle.log(
                    logging.ERROR,
                    "config-rejected",
                    "prompt-worker configuration not usable, keeping the last good one: %s",
                    exc,
                )
                return self.options.refresh_interval
            self.config = config
        with self.lock:
            if verdict.action == "load":
                self._stats.config_loads += 1
            else:
                self._stats.config_not_modified += 1
            self._stats.config_etag = None if self.config is None else self.config.etag
            self._stats.config_fetched_at = time.time()
            recovered, self._refresh_failing = self._refresh_failing, False
        if recovered:
            self._throttle.reset("config-failed")
            logger.info("prompt-worker configuration refreshed again")
        return self.options.refresh_interval

    def config_unreachable(self, exc: Exception) -> float:
        self._config_failed(f"{type(exc).__name__}: {exc}")
        return self.options.refresh_interval

    def _config_failed(self, reason: str) -> None:
        with self.lock:
            self._stats.config_failures += 1
            self._refresh_failing = True
        serving = "the last configuration" if self.config is not None else "fallbacks"
        self._throttle.log(
            logging.WARNING,
            "config-failed",
            "prompt-worker configuration refresh failed (%s); serving %s",
            reason,
            serving,
        )

    def refresh_delay(self, delay: float) -> float:
        """`delay` spread by +-10%, so that the processes of a fleet started together do not
        all ask at once."""
        return delay * (0.9 + 0.2 * random.random())

    # --- log and delivery ------------------------------------------------------------

    def log(self, conversation: Mapping[str, Any]) -> bool:
        """Buffer one conversation; answers whether the sender should be woken."""
        if not isinstance(conversation, Mapping):
            raise TypeError(f"log() takes a dict; got {type(conversation).__name__}")
        if self.closed:
            self._count_and_warn(
                "dropped_at_close", "closed", "conversation logged after close(); dropped"
            )
            return False
        try:
            row = encode_conversation(conversation, datetime.now(UTC))
        except ValueError as exc:
            self._count_and_warn("dropped_invalid", "invalid", "conversation not logged: %s", exc)
            return False
        with self.lock:
            wake, dropped = self.buffer.add(row, time.monotonic())
            self._stats.logged += 1
            self._stats.dropped_overflow += dropped
        if dropped:
            self._throttle.log(
                logging.WARNING,
                "overflow",
                "log buffer full (max_buffered=%d conversations, max_buffered_bytes=%d): "
                "dropped the oldest; is the service reachable? (stats.dropped_overflow counts "
                "them)",
                self.options.max_buffered,
                self.options.max_buffered_bytes,
            )
        return wake

    def _count_and_warn(self, counter: str, kind: str, message: str, *args: object) -> None:
        with self.lock:
            setattr(self._stats, counter, getattr(self._stats, counter) + 1)
        self._throttle.log(logging.WARNING, kind, message, *args)

    def take_batch(self) -> tuple[Batch | None, float | None]:
        """The batch to send now, or None and the seconds to wait (None: until woken)."""
        with self.lock:
            now = time.monotonic()
            batch = self.buffer.take(now)
            return batch, None if batch is not None else self.buffer.wait_time(now)

    def send_headers(self, batch: Batch) -> dict[str, str]:
        return {"Content-Type": "application/json", IDEMPOTENCY_HEADER: batch.key}

    def batch_answered(
        self, batch: Batch, status: int, headers: Mapping[str, str], body: bytes
    ) -> None:
        verdict = judge_send(status, headers, body, len(batch.rows), datetime.now(UTC))
        with self.lock:
            if not self.buffer.is_current(batch):
                return  # close() gave up on it meanwhile, and counted it
            if verdict.action == "delivered":
                self._stats.sent += self.buffer.done(batch)
                self._stats.batches_sent += 1
                if batch.attempts:
                    self._throttle.reset("retry")
                    logger.info("prompt-worker batch delivered after %d retries", batch.attempts)
            elif verdict.action == "retry":
                self._retry(batch, verdict.reason, verdict.retry_after)
            elif verdict.action == "split":
                half = len(batch.rows) // 2
                self.buffer.replace(batch, [batch.rows[:half], batch.rows[half:]])
                logger.info("batch of %d conversations too large; sending it in two", half * 2)
            else:
                self._refused(batch, verdict.reason, verdict.bad_rows)

    def batch_unsent(self, batch: Batch, exc: Exception) -> None:
        """The request failed without an answer (refused, reset, timed out): retry."""
        with self.lock:
            if self.buffer.is_current(batch):
                self._retry(batch, f"{type(exc).__name__}: {exc}", None)

    def _retry(self, batch: Batch, reason: str, retry_after: float | None) -> None:
        delay = retry_after
        if delay is None:
            delay = backoff_delay(
                batch.attempts + 1,
                base=RETRY_BASE,
                cap=self.options.max_backoff,
                jitter=random.random(),
            )
        self.buffer.retry_later(batch, delay, time.monotonic())
        self._stats.retries += 1
        self._throttle.log(
            logging.WARNING,
            "retry",
            "sending %d conversations to prompt-worker failed (%s); retrying in %.1f s "
            "with the same Idempotency-Key",
            len(batch.rows),
            reason,
            delay,
        )

    def _refused(self, batch: Batch, reason: str, bad_rows: tuple[int, ...]) -> None:
        if bad_rows:
            bad = set(bad_rows)
            keep = [row for index, row in enumerate(batch.rows) if index not in bad]
            self.buffer.replace(batch, [keep])
            dropped = len(bad)
        else:
            dropped = self.buffer.done(batch)
        self._stats.dropped_rejected += dropped
        self._throttle.log(
            logging.ERROR,
            "refused",
            "prompt-worker refused %d of %d conversations, dropped (stats.dropped_rejected): %s",
            dropped,
            len(batch.rows),
            reason,
        )

    def abandon(self) -> int:
        """close() gave up waiting: drop what is left, counted and logged."""
        with self.lock:
            dropped = self.buffer.clear()
            self._stats.dropped_at_close += dropped
        if dropped:
            logger.warning(
                "prompt-worker client closed with %d conversations undelivered; dropped", dropped
            )
        return dropped
