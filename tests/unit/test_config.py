"""Settings from the environment: documented defaults and clear errors for bad values."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from optimizer.config import DEFAULT_DATABASE_URL, Settings, environment_variables, load_settings
from optimizer.errors import ConfigError, PromptWorkerError


def test_defaults_match_the_design():
    s = load_settings({})
    assert s.database_url == DEFAULT_DATABASE_URL
    assert s.database_url.startswith("sqlite:///")
    assert s.host == "127.0.0.1"
    assert s.port == 8081
    assert s.admin_token is None
    assert s.ingest_token is None
    assert s.anthropic_api_key is None
    assert s.job_timeout_seconds == 2700
    assert s.max_attempts == 3
    assert s.pattern_analysis_cron == "0 * * * *"
    assert s.monitoring_cron == "*/15 * * * *"
    assert s.promotion_confidence == pytest.approx(0.90)
    assert s.min_conversations_per_arm == 100
    assert s.job_retention_days == 7
    assert s.worker_concurrency >= 1
    assert s.poll_interval_seconds > 0


def test_blank_values_fall_back_to_defaults():
    s = load_settings({"PORT": "  ", "ADMIN_TOKEN": "", "MONITORING_CRON": ""})
    assert s.port == 8081
    assert s.admin_token is None
    assert s.monitoring_cron == "*/15 * * * *"


def test_values_are_read_and_converted():
    s = load_settings(
        {
            "DATABASE_URL": "postgresql://u@db/pw",
            "HOST": "0.0.0.0",
            "PORT": "9000",
            "ADMIN_TOKEN": " secret ",
            "INGEST_TOKEN": "ingest",
            "ANTHROPIC_API_KEY": "sk-x",
            "WORKER_CONCURRENCY": "4",
            "POLL_INTERVAL_SECONDS": "0.5",
            "JOB_TIMEOUT_SECONDS": "60",
            "MAX_ATTEMPTS": "5",
            "PATTERN_ANALYSIS_CRON": "30 2 * * *",
            "MONITORING_CRON": "*/5 * * * *",
            "PROMOTION_CONFIDENCE": "0.95",
            "MIN_CONVERSATIONS_PER_ARM": "250",
            "JOB_RETENTION_DAYS": "30",
            "LOG_LEVEL": "debug",
        }
    )
    assert s == Settings(
        database_url="postgresql://u@db/pw",
        host="0.0.0.0",
        port=9000,
        admin_token="secret",
        ingest_token="ingest",
        anthropic_api_key="sk-x",
        worker_concurrency=4,
        poll_interval_seconds=0.5,
        job_timeout_seconds=60.0,
        max_attempts=5,
        pattern_analysis_cron="30 2 * * *",
        monitoring_cron="*/5 * * * *",
        promotion_confidence=0.95,
        min_conversations_per_arm=250,
        job_retention_days=30.0,
        log_level="DEBUG",
    )
    assert isinstance(s.port, int) and isinstance(s.max_attempts, int)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "-1"),
        ("PORT", "80.5"),
        ("WORKER_CONCURRENCY", "0"),
        ("WORKER_CONCURRENCY", "many"),
        ("MAX_ATTEMPTS", "0"),
        ("JOB_TIMEOUT_SECONDS", "0"),
        ("JOB_TIMEOUT_SECONDS", "soon"),
        ("POLL_INTERVAL_SECONDS", "0"),
        ("PROMOTION_CONFIDENCE", "1.5"),
        ("PROMOTION_CONFIDENCE", "90%"),
        ("MIN_CONVERSATIONS_PER_ARM", "0"),
        ("JOB_RETENTION_DAYS", "-1"),
        ("JOB_RETENTION_DAYS", "1e9"),  # past what a datetime can subtract
        ("LEASE_SECONDS", "1e13"),
        ("JOB_TIMEOUT_SECONDS", "1e12"),
        ("MONITORING_CRON", "every minute"),
        ("MONITORING_CRON", "* * * *"),
        ("PATTERN_ANALYSIS_CRON", "61 * * * *"),
        ("LOG_FORMAT", "xml"),
        ("LOG_LEVEL", "verbose"),
        ("MIN_CONVERSATIONS_PER_ARM", "2000000000"),
        ("WEBHOOK_URL", "ftp://hooks.example"),
        ("ADMIN_SIGNATURE_WINDOW_SECONDS", "0"),
        ("APP_RATE_LIMIT_PER_SECOND", "-1"),
        ("APP_RATE_LIMIT_BURST", "0"),
    ],
)
def test_bad_value_raises_config_error_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    message = str(info.value)
    assert name in message
    assert value.strip() in message
    assert isinstance(info.value, PromptWorkerError)


def test_heartbeat_is_a_fraction_of_the_lease():
    assert load_settings({"LEASE_SECONDS": "30"}).heartbeat_seconds == pytest.approx(10.0)
    assert load_settings({"LEASE_SECONDS": "0.5"}).heartbeat_seconds == pytest.approx(0.2)


@pytest.mark.parametrize(
    "env, names",
    [
        ({"WEBHOOK_URL": "https://hooks.example/x"}, ("WEBHOOK_URL", "WEBHOOK_SECRET")),
        ({"ADMIN_TOKEN": "same", "INGEST_TOKEN": "same"}, ("ADMIN_TOKEN", "INGEST_TOKEN")),
    ],
)
def test_settings_wrong_together_are_refused(env, names):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert all(name in str(info.value) for name in names)
    assert "same" not in str(info.value)  # a token is never echoed


def test_unattended_settings_are_read():
    settings = load_settings(
        {
            "LOG_FORMAT": "json",
            "WEBHOOK_URL": "https://hooks.example/x",
            "WEBHOOK_SECRET": "s3",
            "ADMIN_HMAC_SECRET": "h",
            "APP_RATE_LIMIT_PER_SECOND": "0",
            "APP_RATE_LIMIT_BURST": "5",
        }
    )
    assert (
        settings.log_format,
        settings.webhook_url,
        settings.webhook_secret,
        settings.admin_hmac_secret,
        settings.app_rate_limit_per_second,
        settings.app_rate_limit_burst,
    ) == ("json", "https://hooks.example/x", "s3", "h", 0.0, 5)


def test_http_connection_timeouts_have_defaults_and_are_read():
    defaults = load_settings({})
    assert (defaults.http_keepalive_timeout_seconds, defaults.http_request_timeout_seconds) == (
        75.0,
        30.0,
    )
    settings = load_settings(
        {"HTTP_KEEPALIVE_TIMEOUT_SECONDS": "5", "HTTP_REQUEST_TIMEOUT_SECONDS": "1.5"}
    )
    assert (settings.http_keepalive_timeout_seconds, settings.http_request_timeout_seconds) == (
        5.0,
        1.5,
    )


@pytest.mark.parametrize("name", ["HTTP_KEEPALIVE_TIMEOUT_SECONDS", "HTTP_REQUEST_TIMEOUT_SECONDS"])
@pytest.mark.parametrize("value", ["0", "-3", "soon", "nan", "inf", "100000"])
def test_bad_http_connection_timeout_is_refused(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    assert name in str(info.value) and value in str(info.value)


@pytest.mark.parametrize("name", ["JOB_TIMEOUT_SECONDS", "LEASE_SECONDS", "JOB_RETENTION_DAYS"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused(name, value):
    with pytest.raises(ConfigError) as info:
        load_settings({name: value})
    assert name in str(info.value) and value in str(info.value)


def test_every_problem_is_reported_on_one_line():
    with pytest.raises(ConfigError) as info:
        load_settings({"WORKER_CONCURRENCY": "x", "PORT": "70000", "LOG_FORMAT": "xml"})
    message = str(info.value)
    assert "\n" not in message
    assert "WORKER_CONCURRENCY must be a whole number from 1 to 64; got 'x'" in message
    assert "PORT must be a whole number from 0 to 65535; got '70000'" in message
    assert "LOG_FORMAT must be one of kv, json; got 'xml'" in message


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (
            "JOB_TIMEOUT_SECONDS",
            "soon",
            "JOB_TIMEOUT_SECONDS must be a number from 1 to 604800; got 'soon'",
        ),
        (
            "LEASE_SECONDS",
            "nan",
            "LEASE_SECONDS must be a finite number from 0.5 to 86400; got 'nan'",
        ),
        (
            "PROMOTION_CONFIDENCE",
            "90%",
            "PROMOTION_CONFIDENCE must be a number from 0.5 to 0.9999; got '90%'",
        ),
        (
            "LOG_LEVEL",
            " Verbose ",
            "LOG_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL; got 'Verbose'",
        ),
    ],
)
def test_the_message_says_what_is_accepted_and_what_was_given(name, value, expected):
    with pytest.raises(ConfigError, match="^" + re.escape(expected) + "$"):
        load_settings({name: value})


def test_choices_are_read_in_any_case():
    settings = load_settings(
        {"LOG_LEVEL": "warning", "LOG_FORMAT": "JSON", "LLM_PROVIDER": "Offline"}
    )
    assert (settings.log_level, settings.log_format, settings.llm_provider) == (
        "WARNING",
        "json",
        "offline",
    )


def test_only_upper_case_names_are_read():
    assert load_settings({"port": "1", "worker_concurrency": "x"}) == Settings()


def test_the_environment_is_read_only_by_load_settings(monkeypatch):
    monkeypatch.setenv("PORT", "9000")
    monkeypatch.setenv("WORKER_CONCURRENCY", "x")
    assert Settings().port == 8081  # a test's Settings(...) never picks up the shell's
    monkeypatch.delenv("WORKER_CONCURRENCY")
    assert load_settings().port == 9000


def test_settings_are_frozen_and_hide_secrets_from_repr():
    settings = Settings(
        admin_token="admin-secret",
        webhook_url="https://h.example/x",
        webhook_secret="hook-secret",
        anthropic_api_key="sk-ant-secret",
    )
    with pytest.raises(ValidationError):
        settings.port = 1  # type: ignore[misc]
    assert not {"admin-secret", "hook-secret", "sk-ant-secret"} & set(
        re.findall(r"'([^']*)'", repr(settings))
    )


def test_each_variable_is_a_field_named_in_upper_case():
    names = environment_variables()
    assert names == [field.upper() for field in Settings.model_fields]
    assert {"DATABASE_URL", "WORKER_CONCURRENCY", "MONITORING_CRON"} <= set(names)
    assert load_settings({}) == Settings()


NUMERIC = [name for name, info in Settings.model_fields.items() if info.annotation in (int, float)]


@given(
    name=st.sampled_from(NUMERIC),
    raw=st.text(min_size=1, max_size=12).filter(
        lambda s: s.strip() and "\x00" not in s and not _is_number(s)
    ),
)
def test_any_text_that_is_not_a_number_is_refused_naming_the_variable(name, raw):
    with pytest.raises(ConfigError) as info:
        load_settings({name.upper(): raw})
    assert str(info.value).startswith(f"{name.upper()} must be ")
    assert "\n" not in str(info.value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
