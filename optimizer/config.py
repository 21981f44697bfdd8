"""Settings read from the environment, validated once at start-up.

Each setting is one field of `Settings`: its environment variable is the field's name in
upper case, and its default, bounds and description are declared there once. The
documentation tests read the fields, so a new one must also get a row in
docs/configuration.md and a line in .env.example.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal, get_args, get_origin

import annotated_types
from apscheduler.triggers.cron import CronTrigger
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from optimizer.errors import ConfigError
from optimizer.text_input import shown

DEFAULT_DATABASE_URL = "sqlite:///prompt_worker.db"
# `offline` is the deterministic stand-in for Claude, for the demo and tests only.
LlmProvider = Literal["anthropic", "offline"]
LogFormat = Literal["kv", "json"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
UiAccess = Literal["auto", "off", "read-only", "full"]
PromotionMode = Literal["auto", "approve"]
LLM_PROVIDERS: tuple[str, ...] = get_args(LlmProvider)
LOG_FORMATS: tuple[str, ...] = get_args(LogFormat)
LOG_LEVELS = tuple(level.lower() for level in get_args(LogLevel))
# The largest minimum an experiment may ask for (optimizer.experiments.validation uses it).
MAX_MIN_CONVERSATIONS_PER_ARM = 1_000_000_000


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


def _cron(expr: str) -> str:
    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        raise ValueError(f"is not a valid 5-field cron expression ({expr!r}): {exc}") from None
    return expr


def _http_url(url: str | None) -> str | None:
    if url is not None and not url.lower().startswith(("http://", "https://")):
        raise ValueError(f"must start with http:// or https://; got {shown(url)}")
    return url


Cron = Annotated[str, AfterValidator(_cron)]
# Any case is accepted from the environment ("debug"); the stored value is canonical.
AnyCaseLevel = Annotated[LogLevel, BeforeValidator(_upper)]
AnyCaseFormat = Annotated[LogFormat, BeforeValidator(_lower)]
AnyCaseProvider = Annotated[LlmProvider, BeforeValidator(_lower)]
AnyCaseUiAccess = Annotated[UiAccess, BeforeValidator(_lower)]
AnyCasePromotionMode = Annotated[PromotionMode, BeforeValidator(_lower)]
HttpUrl = Annotated[str | None, AfterValidator(_http_url)]


class Settings(BaseSettings):
    """Every setting of the service; `load_settings` reads them from the environment."""

    # Frozen: one value for the life of the process. Numbers must be finite everywhere.
    model_config = SettingsConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    database_url: str = Field(
        DEFAULT_DATABASE_URL, repr=False, description="SQLAlchemy URL of the database."
    )
    host: str = Field("127.0.0.1", description="Address the HTTP server listens on.")
    port: int = Field(8081, ge=0, le=65535, description="Port of the HTTP server.")
    admin_token: str | None = Field(None, repr=False, description="Bearer token of the admin API.")
    ingest_token: str | None = Field(
        None, repr=False, description="Bearer token of the application API (/v1)."
    )
    anthropic_api_key: str | None = Field(None, repr=False, description="Key for Claude.")
    worker_concurrency: int = Field(
        1, ge=1, le=64, description="Jobs this process runs at the same time."
    )
    poll_interval_seconds: float = Field(
        5.0, ge=0.05, le=3600, description="How often an idle worker looks for due jobs."
    )
    job_timeout_seconds: float = Field(
        2700.0, ge=1, le=604_800, description="Longest a job attempt may run."
    )
    max_attempts: int = Field(
        3, ge=1, le=100, description="Attempts a job gets before it is marked failed."
    )
    lease_seconds: float = Field(
        60.0, ge=0.5, le=86_400, description="Length of the lease on a running job."
    )
    retry_base_seconds: float = Field(
        30.0, ge=0, le=86_400, description="Delay before the first retry; doubles per attempt."
    )
    shutdown_grace_seconds: float = Field(
        30.0, ge=0, le=86_400, description="On SIGTERM, how long running jobs may go on."
    )
    pattern_analysis_cron: Cron = Field(
        "0 * * * *", description="When a pattern_analysis job is enqueued (cron, UTC)."
    )
    monitoring_cron: Cron = Field(
        "*/15 * * * *", description="When an experiment_monitoring job is enqueued (cron, UTC)."
    )
    promotion_confidence: float = Field(
        0.90, ge=0.5, le=0.9999, description="Default confidence of a new experiment."
    )
    min_conversations_per_arm: int = Field(
        100,
        ge=1,
        le=MAX_MIN_CONVERSATIONS_PER_ARM,
        description="Default min_conversations_per_arm of a new experiment.",
    )
    job_retention_days: float = Field(
        7.0, ge=0, le=36_500, description="Finished jobs older than this many days are deleted."
    )
    # At least 8 days: pattern analysis reads the last 7 (optimizer.retention).
    conversation_retention_days: float = Field(
        90.0,
        ge=8,
        le=36_500,
        description="Conversations older than this many days are deleted (statistics kept).",
    )
    transcript_retention_days: float = Field(
        30.0,
        ge=8,
        le=36_500,
        description="Transcripts of conversations older than this many days are erased.",
    )
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest HTTP request body accepted."
    )
    # Longer than the idle timeout of the usual proxies and load balancers (60 s), so they
    # drop an idle connection first and never reuse one the service is closing.
    http_keepalive_timeout_seconds: float = Field(
        75.0, ge=0.1, le=86400, description="Seconds an idle keep-alive connection stays open."
    )
    http_request_timeout_seconds: float = Field(
        30.0,
        ge=0.1,
        le=86400,
        description="Seconds a client has to send a request's headers and body.",
    )
    log_level: AnyCaseLevel = Field("INFO", description="Least severe log level written.")
    llm_provider: AnyCaseProvider = Field(
        "anthropic", description="anthropic (Claude) or offline (demo and tests only)."
    )
    llm_model_sonnet: str = Field(
        "claude-sonnet-5-5", description="Model id the alias sonnet stands for."
    )
    llm_model_opus: str = Field(
        "claude-opus-5-5", description="Model id the alias opus stands for."
    )
    llm_calls_per_hour: int = Field(100, ge=1, le=100_000, description="Most LLM calls per hour.")
    llm_daily_budget_usd: float = Field(
        20.0, ge=0.01, description="Most spent on LLM calls per day, USD."
    )
    llm_max_retries: int = Field(4, ge=0, le=10, description="Retries of a failed LLM call.")
    insight_min_conversations: int = Field(
        50, ge=2, description="Fewest conversations a pattern-analysis finding rests on."
    )
    insight_min_effect: float = Field(
        0.05, ge=0.0, le=1.0, description="Smallest effect a finding must show to be acted on."
    )
    insight_fdr: float = Field(
        0.05, ge=0.0001, le=0.5, description="False discovery rate across the findings."
    )
    log_format: AnyCaseFormat = Field("kv", description="kv (key=value) or json lines.")
    webhook_url: HttpUrl = Field(
        None,
        description="Where a signed event is POSTed per finished job, experiment "
        "decision and person's action on an experiment.",
    )
    webhook_secret: str | None = Field(
        None, repr=False, description="Key of the webhooks' HMAC signature."
    )
    admin_hmac_secret: str | None = Field(
        None, repr=False, description="When set, admin requests must also be signed with it."
    )
    admin_signature_window_seconds: float = Field(
        300.0, ge=1, le=3600, description="How far a signed request's timestamp may be off."
    )
    app_rate_limit_per_second: float = Field(
        1000.0, ge=0, description="Requests per second per ingest token; 0: no limit."
    )
    app_rate_limit_burst: int = Field(
        2000, ge=1, description="Requests a token may make at once before the rate applies."
    )
    # auto: the dashboard is off while ADMIN_HMAC_SECRET is set, since a browser form cannot
    # sign requests and a token-only login would grant more than the signed admin API does.
    ui_access: AnyCaseUiAccess = Field(
        "auto",
        description="The /ui/ dashboard: auto (off when ADMIN_HMAC_SECRET is set), off, "
        "read-only or full.",
    )
    # aiohttp does not trust X-Forwarded-Proto, so behind a TLS proxy it cannot tell by itself.
    ui_secure_cookies: bool = Field(
        False, description="Mark the dashboard's cookies Secure (HTTPS only)."
    )
    ui_session_hours: float = Field(
        8.0, gt=0, le=168, description="Hours a dashboard login lasts (from login, not idle)."
    )
    promotion_mode: AnyCasePromotionMode = Field(
        "auto",
        description="auto (a winner becomes active) or approve (it waits for a person); "
        "a prompt may override it.",
    )
    max_live_candidates: int = Field(
        2, ge=1, le=5, description="Most candidates of one generation that go live."
    )
    replay_enabled: bool = Field(
        True, description="Replay and judge candidates on logged conversations before exposure."
    )
    replay_model: str = Field(
        "sonnet", description="Model that answers replayed conversations (alias or id)."
    )
    judge_model: str = Field(
        "sonnet", description="Model that judges replayed answers pairwise (alias or id)."
    )
    replay_failing_sample: int = Field(
        8, ge=1, le=200, description="Failing conversations replayed per candidate."
    )
    replay_holdout_sample: int = Field(
        6, ge=0, le=200, description="Held-out successful conversations replayed per candidate."
    )
    replay_max_turns: int = Field(
        2, ge=1, le=20, description="Most user turns of a conversation replayed."
    )

    @property
    def heartbeat_seconds(self) -> float:
        return max(self.lease_seconds / 3.0, 0.2)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        """Settings that are each valid but wrong together (tokens are never echoed)."""
        if self.webhook_url and not self.webhook_secret:
            raise ValueError(
                "WEBHOOK_URL is set but WEBHOOK_SECRET is not: every webhook is "
                "signed with it; set WEBHOOK_SECRET to a long random string"
            )
        if self.admin_token and self.admin_token == self.ingest_token:
            raise ValueError(
                "ADMIN_TOKEN and INGEST_TOKEN must differ: the application's "
                "token must not open the admin API"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # `Settings(...)` holds exactly what it is given, so a test's settings never pick up
        # the shell's; only `load_settings` reads the environment (and never a .env file).
        return (init_settings,)


class _Environment(EnvSettingsSource):
    """The variables of `env` (not always os.environ): upper-case names only, as documented,
    values stripped, and a blank value counts as unset."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(Settings, case_sensitive=False)

    # The hook pydantic-settings' own .env source overrides to supply its variables.
    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {
            name.lower(): value.strip()
            for name, value in self._env.items()
            if name.isupper() and value.strip()
        }


def variable(field: str) -> str:
    """The environment variable of a field of Settings."""
    return field.upper()


def environment_variables() -> list[str]:
    """Every environment variable `load_settings` reads, in declaration order."""
    return [variable(field) for field in Settings.model_fields]


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from `env` (default: the process environment)."""
    values = _Environment(os.environ if env is None else env)()
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problem(error, values) for error in exc.errors())) from None


def _problem(error: ErrorDetails, values: Mapping[str, Any]) -> str:
    """One problem, led by the variable at fault and showing the value as it was given."""
    reason = error.get("ctx", {}).get("error")
    if not error["loc"]:  # several settings wrong together: the reason names them
        return str(reason)
    field = str(error["loc"][0])
    if error["type"] == "value_error":  # our own validators word it to follow the name
        return f"{variable(field)} {reason}"
    expected = _expected(Settings.model_fields[field], error)
    return f"{variable(field)} must be {expected}; got {shown(values.get(field, error['input']))}"


def _expected(info: FieldInfo, error: ErrorDetails) -> str:
    """What the field accepts, in words: its type and its whole range, whichever check
    failed (a bound alone would not say what to write instead)."""
    choices = [arg for arg in _bare(info.annotation) if isinstance(arg, str)]
    if choices:
        return "one of " + ", ".join(choices)
    if info.annotation not in (int, float):
        return error["msg"][0].lower() + error["msg"][1:]
    kind = (
        "a whole number"
        if info.annotation is int
        else "a finite number"
        if error["type"] == "finite_number"
        else "a number"
    )
    low = next((m.ge for m in info.metadata if isinstance(m, annotated_types.Ge)), None)
    above = next((m.gt for m in info.metadata if isinstance(m, annotated_types.Gt)), None)
    high = next((m.le for m in info.metadata if isinstance(m, annotated_types.Le)), None)
    if above is not None:
        return f"{kind} above {above}" + (f" and at most {high}" if high is not None else "")
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    return f"{kind} >= {low}" if low is not None else kind


def _bare(annotation: Any) -> tuple[Any, ...]:
    """The values of a Literal annotation, looking through Annotated; () for any other."""
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return get_args(annotation) if get_origin(annotation) is Literal else ()
