"""Settings read from the environment, validated once at start-up."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

from apscheduler.triggers.cron import CronTrigger

from optimizer.errors import ConfigError

DEFAULT_DATABASE_URL = "sqlite:///prompt_worker.db"
# `offline` is the deterministic stand-in for Claude, for the demo and tests only.
LLM_PROVIDERS = ("anthropic", "offline")
LOG_FORMATS = ("kv", "json")
# The largest minimum an experiment may ask for (optimizer.experiments.validation uses it).
MAX_MIN_CONVERSATIONS_PER_ARM = 1_000_000_000
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    port: int = 8081
    admin_token: str | None = None
    ingest_token: str | None = None
    anthropic_api_key: str | None = None
    worker_concurrency: int = 1
    poll_interval_seconds: float = 5.0
    job_timeout_seconds: float = 2700.0
    max_attempts: int = 3
    lease_seconds: float = 60.0
    retry_base_seconds: float = 30.0
    shutdown_grace_seconds: float = 30.0
    pattern_analysis_cron: str = "0 * * * *"
    monitoring_cron: str = "*/15 * * * *"
    promotion_confidence: float = 0.90
    min_conversations_per_arm: int = 100
    job_retention_days: float = 7.0
    max_body_bytes: int = 1_048_576
    # Longer than the idle timeout of the usual proxies and load balancers (60 s), so they
    # drop an idle connection first and never reuse one the service is closing.
    http_keepalive_timeout_seconds: float = 75.0
    # From a request's first byte until its headers and body are all in.
    http_request_timeout_seconds: float = 30.0
    log_level: str = "INFO"
    # The LLM: which client, which models the aliases mean, and the limits on its use.
    llm_provider: str = "anthropic"
    llm_model_sonnet: str = "claude-sonnet-5-5"
    llm_model_opus: str = "claude-opus-5-5"
    llm_calls_per_hour: int = 100
    llm_daily_budget_usd: float = 20.0
    llm_max_retries: int = 4
    # Pattern analysis: when a finding is worth acting on.
    insight_min_conversations: int = 50
    insight_min_effect: float = 0.05
    insight_fdr: float = 0.05
    # Unattended operation: logs, webhooks, signed admin requests, application rate limit.
    log_format: str = "kv"
    webhook_url: str | None = None
    webhook_secret: str | None = None
    admin_hmac_secret: str | None = None
    admin_signature_window_seconds: float = 300.0
    app_rate_limit_per_second: float = 1000.0
    app_rate_limit_burst: int = 2000

    @property
    def heartbeat_seconds(self) -> float:
        return max(self.lease_seconds / 3.0, 0.2)


def _text(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def _number(env: Mapping[str, str], name: str, default: float, *, minimum: float,
            maximum: float | None = None, integer: bool = False) -> float:
    raw = _text(env, name, None)
    if raw is None:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ConfigError(f"{name} must be {kind}, got {raw!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {raw!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {raw!r}")
    return value


def _choice(env: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = (_text(env, name, default) or default).lower()
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _cron(env: Mapping[str, str], name: str, default: str) -> str:
    expr = _text(env, name, default) or default
    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        raise ConfigError(
            f"{name} is not a valid 5-field cron expression ({expr!r}): {exc}") from None
    return expr


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from `env` (default: the process environment)."""
    env = os.environ if env is None else env
    d = Settings()
    settings = Settings(
        database_url=_text(env, "DATABASE_URL", d.database_url) or d.database_url,
        host=_text(env, "HOST", d.host) or d.host,
        port=int(_number(env, "PORT", d.port, minimum=0, maximum=65535, integer=True)),
        admin_token=_text(env, "ADMIN_TOKEN", None),
        ingest_token=_text(env, "INGEST_TOKEN", None),
        anthropic_api_key=_text(env, "ANTHROPIC_API_KEY", None),
        worker_concurrency=int(
            _number(env, "WORKER_CONCURRENCY", d.worker_concurrency, minimum=1, maximum=64,
                    integer=True)),
        poll_interval_seconds=_number(env, "POLL_INTERVAL_SECONDS", d.poll_interval_seconds,
                                      minimum=0.05, maximum=3600),
        job_timeout_seconds=_number(env, "JOB_TIMEOUT_SECONDS", d.job_timeout_seconds,
                                    minimum=1),
        max_attempts=int(_number(env, "MAX_ATTEMPTS", d.max_attempts, minimum=1, maximum=100,
                                 integer=True)),
        lease_seconds=_number(env, "LEASE_SECONDS", d.lease_seconds, minimum=0.5),
        retry_base_seconds=_number(env, "RETRY_BASE_SECONDS", d.retry_base_seconds, minimum=0),
        shutdown_grace_seconds=_number(env, "SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds,
                                       minimum=0),
        pattern_analysis_cron=_cron(env, "PATTERN_ANALYSIS_CRON", d.pattern_analysis_cron),
        monitoring_cron=_cron(env, "MONITORING_CRON", d.monitoring_cron),
        promotion_confidence=_number(env, "PROMOTION_CONFIDENCE", d.promotion_confidence,
                                     minimum=0.5, maximum=0.9999),
        min_conversations_per_arm=int(
            _number(env, "MIN_CONVERSATIONS_PER_ARM", d.min_conversations_per_arm, minimum=1,
                    maximum=MAX_MIN_CONVERSATIONS_PER_ARM, integer=True)),
        job_retention_days=_number(env, "JOB_RETENTION_DAYS", d.job_retention_days, minimum=0),
        max_body_bytes=int(_number(env, "MAX_BODY_BYTES", d.max_body_bytes, minimum=1024,
                                   integer=True)),
        http_keepalive_timeout_seconds=_number(
            env, "HTTP_KEEPALIVE_TIMEOUT_SECONDS", d.http_keepalive_timeout_seconds,
            minimum=0.1, maximum=86400),
        http_request_timeout_seconds=_number(
            env, "HTTP_REQUEST_TIMEOUT_SECONDS", d.http_request_timeout_seconds,
            minimum=0.1, maximum=86400),
        log_level=_choice(env, "LOG_LEVEL", d.log_level, LOG_LEVELS).upper(),
        llm_provider=_choice(env, "LLM_PROVIDER", d.llm_provider, LLM_PROVIDERS),
        llm_model_sonnet=_text(env, "LLM_MODEL_SONNET", d.llm_model_sonnet) or d.llm_model_sonnet,
        llm_model_opus=_text(env, "LLM_MODEL_OPUS", d.llm_model_opus) or d.llm_model_opus,
        llm_calls_per_hour=int(_number(env, "LLM_CALLS_PER_HOUR", d.llm_calls_per_hour,
                                       minimum=1, maximum=100_000, integer=True)),
        llm_daily_budget_usd=_number(env, "LLM_DAILY_BUDGET_USD", d.llm_daily_budget_usd,
                                     minimum=0.01),
        llm_max_retries=int(_number(env, "LLM_MAX_RETRIES", d.llm_max_retries, minimum=0,
                                    maximum=10, integer=True)),
        insight_min_conversations=int(
            _number(env, "INSIGHT_MIN_CONVERSATIONS", d.insight_min_conversations, minimum=2,
                    integer=True)),
        insight_min_effect=_number(env, "INSIGHT_MIN_EFFECT", d.insight_min_effect,
                                   minimum=0.0, maximum=1.0),
        insight_fdr=_number(env, "INSIGHT_FDR", d.insight_fdr, minimum=0.0001, maximum=0.5),
        log_format=_choice(env, "LOG_FORMAT", d.log_format, LOG_FORMATS),
        webhook_url=_webhook_url(env),
        webhook_secret=_text(env, "WEBHOOK_SECRET", None),
        admin_hmac_secret=_text(env, "ADMIN_HMAC_SECRET", None),
        admin_signature_window_seconds=_number(
            env, "ADMIN_SIGNATURE_WINDOW_SECONDS", d.admin_signature_window_seconds,
            minimum=1, maximum=3600),
        app_rate_limit_per_second=_number(env, "APP_RATE_LIMIT_PER_SECOND",
                                          d.app_rate_limit_per_second, minimum=0),
        app_rate_limit_burst=int(_number(env, "APP_RATE_LIMIT_BURST", d.app_rate_limit_burst,
                                         minimum=1, integer=True)),
    )
    _check_together(settings)
    return settings


def _webhook_url(env: Mapping[str, str]) -> str | None:
    url = _text(env, "WEBHOOK_URL", None)
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise ConfigError(f"WEBHOOK_URL must start with http:// or https://; got {url[:60]!r}")
    return url


def _check_together(settings: Settings) -> None:
    """Settings that are each valid but wrong together."""
    if settings.webhook_url and not settings.webhook_secret:
        raise ConfigError("WEBHOOK_URL is set but WEBHOOK_SECRET is not: every webhook is "
                          "signed with it; set WEBHOOK_SECRET to a long random string")
    if settings.admin_token and settings.admin_token == settings.ingest_token:
        raise ConfigError("ADMIN_TOKEN and INGEST_TOKEN must differ: the application's token "
                          "must not open the admin API")
